//! Crash repair: a segment cut by a crash or a power cut is shortened to its last complete
//! fragment (`ftyp`, `moov`, then whole `moof` + `mdat` pairs whose `moof` parses), so it plays.
//! Reads at most one `moof` (≤ 1 MiB) at a time; never rewrites what it keeps.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::media::fmp4::read as boxes;

/// What [`repair`] did to a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    Intact,
    /// Cut back to its last complete fragment.
    Truncated {
        from: u64,
        to: u64,
    },
    /// Not even a complete init segment and one fragment: nothing plays.
    Unplayable,
}

/// Cuts a segment file back to its last complete `moof` + `mdat` pair.
pub fn repair(path: &Path) -> io::Result<Repair> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.seek(SeekFrom::End(0))?;
    let good = complete_prefix(&file, len)?;
    if good == len {
        return Ok(Repair::Intact);
    }
    if good == 0 {
        return Ok(Repair::Unplayable);
    }
    file.set_len(good)?;
    file.sync_all()?;
    Ok(Repair::Truncated { from: len, to: good })
}

/// Length of the longest prefix of the file that is `ftyp`, `moov`, then whole fragments whose
/// `moof` parses; 0 when not even the init segment and one fragment are whole.
fn complete_prefix(file: &File, len: u64) -> io::Result<u64> {
    let header_at = |at: u64| -> io::Result<Option<boxes::BoxHeader>> {
        let mut b = [0u8; 16];
        let n = read_at_most(file, &mut b, at)?;
        Ok(boxes::header(&b[..n]).ok())
    };
    let mut at = 0u64;
    let mut init_end = None;
    let mut good = 0;
    let mut expect_init = [*b"ftyp", *b"moov"].into_iter();
    while let Some(h) = header_at(at)? {
        let Some(size) = h.size else { break };
        if at.saturating_add(size) > len {
            break;
        }
        if let Some(want) = expect_init.next() {
            if h.typ != want {
                break;
            }
            at += size;
            if want == *b"moov" {
                init_end = Some(at);
            }
            continue;
        }
        if h.typ != *b"moof" || size > 1 << 20 {
            break;
        }
        let mut moof = vec![0u8; size as usize];
        file.read_exact_at(&mut moof, at)?;
        let Some(mdat) = header_at(at + size)? else { break };
        let Some(mdat_size) = mdat.size.filter(|_| mdat.typ == *b"mdat" && mdat.header_len == 8) else { break };
        let end = at + size + mdat_size;
        if end > len {
            break;
        }
        match boxes::moof(&moof) {
            Ok((m, _)) if boxes::fragment_fits(&m, mdat_size) => {}
            _ => break,
        }
        at = end;
        good = at;
    }
    Ok(if init_end.is_some() { good } else { 0 })
}

fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
