//! The SDL checked into `schema/clew.graphql` is the SDL the server serves.

#[test]
fn checked_in_sdl_matches_the_served_schema() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/clew.graphql");
    let served = clew_api::sdl();
    if std::env::var_os("CLEW_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &served).expect("write schema/clew.graphql");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == served,
        "schema/clew.graphql differs from the schema the server serves; \
         review the change, then run `CLEW_UPDATE_SCHEMA=1 cargo test -p clew-api --test schema_drift` \
         (or `clew schema > schema/clew.graphql`) and commit it"
    );
}
