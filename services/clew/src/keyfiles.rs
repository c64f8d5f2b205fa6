//! Key files on disk: `<stem>.key` holds the C2SP signer key (mode 0600),
//! `<stem>.vkey` the verifier key, each one line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clew_events::ProducerKey;

/// Writes a fresh key pair named `name` into `dir`; returns (key path, vkey path).
pub fn generate(dir: &Path, stem: &str, name: &str) -> Result<(PathBuf, PathBuf, ProducerKey)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = ProducerKey::generate(name)?;
    let skey_path = dir.join(format!("{stem}.key"));
    let vkey_path = dir.join(format!("{stem}.vkey"));
    if skey_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite a key",
            skey_path.display()
        );
    }
    write_private(&skey_path, &key.to_signer_text())?;
    std::fs::write(&vkey_path, format!("{}\n", key.verifier().to_text()))?;
    Ok((skey_path, vkey_path, key))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// Copies `<stem>.key` from `from` into `dir` (mode 0600, with its `.vkey`)
/// unless `dir` already holds one; returns whether it copied.
pub fn install(from: &Path, dir: &Path, stem: &str) -> Result<bool> {
    let src = from.join(format!("{stem}.key"));
    let dst = dir.join(format!("{stem}.key"));
    if !src.exists() || dst.exists() {
        return Ok(false);
    }
    let key = read_producer(&src)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&dst, &key.to_signer_text())?;
    std::fs::write(
        dir.join(format!("{stem}.vkey")),
        format!("{}\n", key.verifier().to_text()),
    )?;
    Ok(true)
}

/// Reads a one-line key file.
pub fn read(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?
        .trim()
        .to_string())
}

/// Reads a signer key file.
pub fn read_producer(path: &Path) -> Result<ProducerKey> {
    ProducerKey::parse(&read(path)?).with_context(|| format!("parsing {}", path.display()))
}

/// A file-name stem for a key name (`clew.example/ledger` → `clew.example_ledger`).
pub fn stem_for(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
