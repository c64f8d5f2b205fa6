//! DSSE pre-authentication encoding.

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, with
/// LEN the ASCII decimal byte length (DSSE protocol.md, "Signature definition").
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = pae_header(payload_type, payload.len());
    out.reserve_exact(payload.len());
    out.extend_from_slice(payload);
    out
}

/// The PAE up to the body: `PAE(type, body)` is this followed by the body
/// (for hashing the message without copying the body).
pub fn pae_header(payload_type: &str, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + 48);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_len.to_string().as_bytes());
    out.push(b' ');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_test_vector() {
        // DSSE protocol.md test vector.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
