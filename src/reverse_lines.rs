//! A file's lines read last first, a block at a time from its end, so the newest of a large log
//! can be found in bounded memory and time (the attempt log's readers want its newest few).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What is read at a time.
const BLOCK: usize = 64 * 1024;

/// A line longer than this is skipped, not held: no line of ours is near it.
const MAX_LINE: usize = 1 << 20;

/// Calls `each` with the lines of `path`, last first (a last line without its newline, torn by a
/// crash, included), reading at most its last `max_bytes`; `each` returns false to stop. The line
/// cut by that limit is not given.
pub fn each_line_backwards(
    path: &Path,
    max_bytes: u64,
    mut each: impl FnMut(&[u8]) -> bool,
) -> io::Result<()> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let floor = len.saturating_sub(max_bytes);
    let mut end = len;
    // The start of a line whose beginning is in a block not read yet.
    let mut carry: Vec<u8> = Vec::new();
    while end > floor {
        let start = end.saturating_sub(BLOCK as u64).max(floor);
        let mut block = vec![0; usize::try_from(end - start).unwrap_or(BLOCK)];
        file.read_exact_at(&mut block, start)?;
        block.extend_from_slice(&carry);
        let mut last = block.len();
        while let Some(nl) = memchr::memrchr(b'\n', &block[..last]) {
            let line = &block[nl + 1..last];
            if !line.is_empty() && !each(line) {
                return Ok(());
            }
            last = nl;
        }
        block.truncate(last);
        carry = match block.len() > MAX_LINE {
            true => Vec::new(),
            false => block,
        };
        end = start;
    }
    if floor == 0 && !carry.is_empty() {
        each(&carry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], max: u64) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        each_line_backwards(&path, max, |l| {
            out.push(String::from_utf8_lossy(l).into_owned());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_come_last_first_across_blocks_and_a_limit_cuts_cleanly() {
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        let all = lines(text.as_bytes(), u64::MAX);
        assert_eq!(all.len(), 50_000);
        assert_eq!(all[0], "line 49999");
        assert_eq!(all[49_999], "line 0");
        let want: Vec<String> = (0..50_000).rev().map(|i| format!("line {i}")).collect();
        assert_eq!(all, want);
        // The last 100 bytes: whole lines only.
        let some = lines(text.as_bytes(), 100);
        assert!(some.len() < 10 && some[0] == "line 49999");
        assert!(some.iter().all(|l| l.starts_with("line ")));
        assert_eq!(lines(b"a\n\nb\ntorn", u64::MAX), ["torn", "b", "a"]);
        assert!(lines(b"", u64::MAX).is_empty());
    }
}
