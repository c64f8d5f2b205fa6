//! zstd frames (RFC 8878) made and read with each thread's own contexts, for
//! the ledger's leaf groups and the catalogue's node records: making a
//! context allocates and zeroes its tables, which costs more than
//! compressing or reading one small value.

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};

thread_local! {
    // One compressor per (level, checksum) a thread has used: switching a
    // context between levels would resize its tables each time.
    static COMPRESSORS: RefCell<Vec<((i32, bool), Compressor<'static>)>> =
        const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `message` as one zstd frame at `level`, with its content checksum
/// (RFC 8878 §3.1.1, Content_Checksum) when `checksum`; `None` when the
/// frame would not be smaller. The frame says its size
/// (§3.1.1.1.4, Frame_Content_Size), which [`decompressed`] relies on.
pub fn compressed(message: &[u8], level: i32, checksum: bool) -> Option<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let at = match compressors
            .iter()
            .position(|(k, _)| *k == (level, checksum))
        {
            Some(at) => at,
            None => {
                let mut c = Compressor::new(level).ok()?;
                c.include_checksum(checksum).ok()?;
                compressors.push(((level, checksum), c));
                compressors.len() - 1
            }
        };
        let frame = compressors[at].1.compress(message).ok()?;
        (frame.len() < message.len()).then_some(frame)
    })
}

/// The message a frame holds. The frame must say its size (§3.1.1.1.4),
/// at most `max` bytes, and hold exactly that much; otherwise the error
/// names what is wrong with it.
pub fn decompressed(frame: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let size = content_size(frame, max)? as u64;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = slot.as_mut().ok_or("no zstd context")?;
        let message = d
            .decompress(frame, size as usize)
            .map_err(|e| format!("it does not decompress: {e}"))?;
        if message.len() as u64 != size {
            return Err("its zstd frame holds less than it says".into());
        }
        Ok(message)
    })
}

/// The size a frame says it holds (§3.1.1.1.4), when it says one of at
/// most `max` bytes; otherwise the error names what is wrong.
pub fn content_size(frame: &[u8], max: usize) -> Result<usize, String> {
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .map_err(|_| "its zstd frame is damaged".to_string())?
        .ok_or("its zstd frame does not say its size")?;
    if size > max as u64 {
        return Err(format!("its zstd frame claims {size} bytes"));
    }
    Ok(size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_at_each_level_and_damage_is_named() {
        let message: Vec<u8> = b"clew ".iter().cycle().take(4096).copied().collect();
        for (level, checksum) in [(1, false), (3, true), (1, false)] {
            let frame = compressed(&message, level, checksum).unwrap();
            assert!(frame.len() < message.len());
            assert_eq!(decompressed(&frame, message.len()).unwrap(), message);
        }
        assert!(
            compressed(b"abc", 1, false).is_none(),
            "not smaller: kept as is"
        );
        let frame = compressed(&message, 3, true).unwrap();
        let err = decompressed(&frame, message.len() - 1).unwrap_err();
        assert!(err.contains("claims 4096 bytes"), "{err}");
        let err = decompressed(&frame[..frame.len() - 3], message.len()).unwrap_err();
        assert!(err.contains("decompress"), "{err}");
        let mut flipped = frame.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = decompressed(&flipped, message.len()).unwrap_err();
        assert!(err.contains("decompress"), "a wrong checksum: {err}");
    }
}
