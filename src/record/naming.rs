//! Segment file names that sort in recording order even when the wall clock jumps.
//!
//! ```text
//!   0000000041_boot-3f2a9c1e_mono-000000123.456.mp4   before the wall clock is trusted
//!   0000000042_20261125T213300Z.mp4                   after
//!   ^ sequence number, 10 digits: the sort key
//! ```
//!
//! Drones boot without a real-time clock and get the time from GPS or NTP later, so the wall
//! clock can start in 1970 (or at the image's build date) and jump forwards or backwards. The
//! sequence number makes `ls` order the recording order whatever the stamps say: at start the
//! recorder scans its directory for the highest number and continues from there, so it is
//! persisted by the files themselves (no state file to corrupt). The stamp after it says when:
//! boot id (first 8 hex digits of `/proc/sys/kernel/random/boot_id`) + CLOCK_MONOTONIC seconds
//! while the wall clock is untrusted, UTC wall time once it is.
//!
//! **Trusted** means: the kernel says the clock is synchronised (adjtimex(2) does not return
//! `TIME_ERROR`, i.e. `STA_UNSYNC` is clear: chrony, ntpd, systemd-timesyncd or gpsd+chrony
//! discipline it), *and* the year is 2024 or later (a sanity floor against a bogus sync). When
//! adjtimex is unavailable, the year floor alone decides. A clock set once with `date -s` stays
//! untrusted: it may be the image's build time, which systemd restores at boot.

use std::fmt::Write as _;
use std::time::Duration;

/// 2024-01-01T00:00:00Z.
pub const TRUSTED_FLOOR_UNIX: u64 = 1_704_067_200;

/// Whether wall time `unix_secs` can name files. `synchronised`: the kernel's view (adjtimex),
/// `None` when unknown.
pub fn wall_clock_trusted(unix_secs: u64, synchronised: Option<bool>) -> bool {
    unix_secs >= TRUSTED_FLOOR_UNIX && synchronised.unwrap_or(true)
}

/// When a segment started, as its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// UTC seconds since the epoch (trusted wall clock).
    Wall(u64),
    /// Boot id prefix and CLOCK_MONOTONIC time.
    Mono { boot: [u8; 8], since_boot: Duration },
}

/// A parsed segment file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentName {
    pub sequence: u64,
    pub stamp: Stamp,
}

/// The clocks as the recorder reads them when it opens a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    pub boot: [u8; 8],
    pub since_boot: Duration,
    pub unix_secs: u64,
    pub wall_trusted: bool,
}

impl Clocks {
    /// The stamp a segment opened now gets.
    pub fn stamp(&self) -> Stamp {
        if self.wall_trusted {
            Stamp::Wall(self.unix_secs)
        } else {
            Stamp::Mono { boot: self.boot, since_boot: self.since_boot }
        }
    }

    /// How old a segment is, when its name allows knowing it: a wall stamp against a trusted
    /// wall clock, a monotonic stamp of this boot against the monotonic clock.
    pub fn age_of(&self, stamp: &Stamp) -> Option<Duration> {
        match *stamp {
            Stamp::Wall(t) if self.wall_trusted => Some(Duration::from_secs(self.unix_secs.saturating_sub(t))),
            Stamp::Mono { boot, since_boot } if boot == self.boot => Some(self.since_boot.saturating_sub(since_boot)),
            _ => None,
        }
    }
}

/// The first 8 characters of a boot id, lowercased hex; other characters become `0`.
pub fn boot_prefix(boot_id: &str) -> [u8; 8] {
    let mut out = [b'0'; 8];
    for (o, c) in out.iter_mut().zip(boot_id.trim().bytes().filter(|&c| c != b'-')) {
        let c = c.to_ascii_lowercase();
        *o = if c.is_ascii_hexdigit() { c } else { b'0' };
    }
    out
}

/// Extension of recorded segments.
pub const SEGMENT_EXT: &str = ".mp4";
/// Extension of snapshots.
pub const SNAPSHOT_EXT: &str = ".jpg";

/// The file name of segment `sequence` with `stamp`.
pub fn segment_name(sequence: u64, stamp: &Stamp) -> String {
    file_name(sequence, stamp, SEGMENT_EXT)
}

/// Parses a name made by [`segment_name`]; `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<SegmentName> {
    parse_file_name(name, SEGMENT_EXT)
}

/// The name of numbered file `sequence` with `stamp` and extension `ext` (with its dot).
pub fn file_name(sequence: u64, stamp: &Stamp, ext: &str) -> String {
    let mut s = String::with_capacity(48);
    let _ = write!(s, "{:010}_", sequence);
    match *stamp {
        Stamp::Wall(t) => {
            let (y, mo, d) = civil_from_days((t / 86_400) as i64);
            let sod = t % 86_400;
            let _ = write!(s, "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z", sod / 3600, sod / 60 % 60, sod % 60);
        }
        Stamp::Mono { boot, since_boot } => {
            let boot = std::str::from_utf8(&boot).unwrap_or("00000000");
            let _ = write!(s, "boot-{boot}_mono-{:09}.{:03}", since_boot.as_secs(), since_boot.subsec_millis());
        }
    }
    s.push_str(ext);
    s
}

/// Parses a name made by [`file_name`] with extension `ext`; `None` for any other file.
pub fn parse_file_name(name: &str, ext: &str) -> Option<SegmentName> {
    let body = name.strip_suffix(ext)?;
    let (seq, stamp) = body.split_once('_')?;
    if seq.len() < 10 || !seq.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let sequence = seq.parse().ok()?;
    let stamp = if let Some(rest) = stamp.strip_prefix("boot-") {
        let (boot, mono) = rest.split_once("_mono-")?;
        let (secs, millis) = mono.split_once('.')?;
        let boot: [u8; 8] = boot.as_bytes().try_into().ok()?;
        if !boot.iter().all(u8::is_ascii_hexdigit) || millis.len() != 3 {
            return None;
        }
        let since_boot = Duration::from_secs(digits(secs)?) + Duration::from_millis(digits(millis)?);
        Stamp::Mono { boot, since_boot }
    } else {
        let b = stamp.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let num = |r: core::ops::Range<usize>| stamp.get(r).and_then(digits);
        let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let days = u64::try_from(days_from_civil(y as i64, mo as u32, d as u32)).ok()?;
        Stamp::Wall(days * 86_400 + h * 3600 + mi * 60 + s)
    };
    Some(SegmentName { sequence, stamp })
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The sequence number the next segment in a directory gets: one past the highest there.
pub fn next_sequence<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names.into_iter().filter_map(parse_segment_name).map(|n| n.sequence.saturating_add(1)).max().unwrap_or(0)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: [u8; 8] = *b"3f2a9c1e";

    fn clocks(unix_secs: u64, trusted: bool, since_boot_s: u64) -> Clocks {
        Clocks { boot: BOOT, since_boot: Duration::from_secs(since_boot_s), unix_secs, wall_trusted: trusted }
    }

    #[test]
    fn names_look_as_documented_and_parse_back() {
        let wall = Stamp::Wall(1_795_642_380); // 2026-11-25T21:33:00Z
        assert_eq!(segment_name(42, &wall), "0000000042_20261125T213300Z.mp4");
        let mono = Stamp::Mono { boot: BOOT, since_boot: Duration::from_millis(123_456) };
        assert_eq!(segment_name(41, &mono), "0000000041_boot-3f2a9c1e_mono-000000123.456.mp4");
        for (seq, stamp) in [(42, wall), (41, mono), (0, Stamp::Wall(0)), (u64::MAX, Stamp::Wall(4_102_444_799))] {
            let n = segment_name(seq, &stamp);
            assert_eq!(parse_segment_name(&n), Some(SegmentName { sequence: seq, stamp }), "{n}");
        }
    }

    #[test]
    fn other_files_are_not_segments() {
        for n in [
            "latest_video.mp4",
            ".latest_video.mp4.tmp",
            "42_20261125T213300Z.mp4",
            "0000000042_20261325T213300Z.mp4",
            "0000000042_20261125T213300Z.mp4.part",
            "0000000042_boot-3f2a9c1x_mono-000000123.456.mp4",
            "0000000042_boot-3f2a9c1e_mono-.456.mp4",
            "00000000-2_20261125T213300Z.mp4",
        ] {
            assert_eq!(parse_segment_name(n), None, "{n}");
        }
    }

    /// The recording of one flight: boot without RTC (clock at the image's build date, untrusted),
    /// GPS sets the clock 30 s in, then NTP steps it back by an hour. Names keep recording order.
    #[test]
    fn names_sort_in_recording_order_across_clock_jumps() {
        let mut names = vec!["0000000007_20250101T000000Z.mp4".to_string()]; // an earlier boot
        let mut seq = next_sequence(names.iter().map(String::as_str));
        assert_eq!(seq, 8);
        let timeline = [
            clocks(1_735_689_600, false, 5),
            clocks(1_735_689_605, false, 10),
            clocks(1_795_642_380, true, 35),
            clocks(1_795_638_785, true, 40),
            clocks(1_795_638_790, true, 45),
        ];
        for c in timeline {
            names.push(segment_name(seq, &c.stamp()));
            seq = next_sequence(names.iter().map(String::as_str));
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        // A restart continues after the highest number, whatever else is in the directory.
        names.push("latest_video.mp4".into());
        assert_eq!(next_sequence(names.iter().map(String::as_str)), 13);
        assert_eq!(next_sequence([]), 0);
    }

    #[test]
    fn trust_needs_synchronisation_and_a_plausible_year() {
        assert!(!wall_clock_trusted(1_600_000_000, Some(true)));
        assert!(!wall_clock_trusted(1_795_642_380, Some(false)));
        assert!(wall_clock_trusted(1_795_642_380, Some(true)));
        assert!(wall_clock_trusted(1_795_642_380, None));
        assert!(!wall_clock_trusted(0, None));
    }

    #[test]
    fn ages_are_known_only_on_a_comparable_clock() {
        let now = clocks(1_795_642_380, true, 100);
        assert_eq!(now.age_of(&Stamp::Wall(1_795_642_280)), Some(Duration::from_secs(100)));
        assert_eq!(
            now.age_of(&Stamp::Mono { boot: BOOT, since_boot: Duration::from_secs(40) }),
            Some(Duration::from_secs(60))
        );
        assert_eq!(now.age_of(&Stamp::Mono { boot: *b"00000000", since_boot: Duration::ZERO }), None);
        let untrusted = clocks(0, false, 100);
        assert_eq!(untrusted.age_of(&Stamp::Wall(1_795_642_280)), None);
    }

    #[test]
    fn boot_prefix_takes_hex_digits() {
        assert_eq!(&boot_prefix("3F2A9C1E-0000-4000-8000-000000000000\n"), b"3f2a9c1e");
        assert_eq!(&boot_prefix("zz"), b"00000000");
    }

    #[test]
    fn calendar_round_trips() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }
}
