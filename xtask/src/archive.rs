//! The app root as a zip file for zip deploy and run-from-package: the same bytes for the same
//! inputs. It owns the format choices: entries in the app root's order and nothing else (no
//! directory entries, no extra fields), one timestamp for every entry (`SOURCE_DATE_EPOCH`, else
//! 1980-01-06), unix permissions in the external attributes (the host runs `handler` only if it
//! is executable), deflate at level 9. It trusts [`AppRoot`] for which files go in and their modes.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipArchive, ZipWriter};

use crate::app_root::AppRoot;
use crate::{Error, Result};

/// The timestamp when `SOURCE_DATE_EPOCH` is unset: 1980-01-06T00:00:00Z, as the Python packager
/// before this one used (the first Sunday of the zip era, a clearly artificial date).
pub const DEFAULT_EPOCH: i64 = 315_964_800;

/// 1980-01-01T00:00:00Z: the earliest time a zip (MS-DOS) timestamp holds; earlier ones clamp to it.
const ZIP_EPOCH: i64 = 315_532_800;

/// The timestamp of every entry: `source_date_epoch` (the value of `SOURCE_DATE_EPOCH`, Unix
/// seconds, as reproducible-builds.org defines it) or [`DEFAULT_EPOCH`], in UTC, clamped to 1980.
pub fn timestamp(source_date_epoch: Option<&str>) -> Result<DateTime> {
    let invalid = |problem: String| Error::Input {
        what: "SOURCE_DATE_EPOCH".to_owned(),
        problem,
    };
    let seconds = match source_date_epoch {
        None => DEFAULT_EPOCH,
        Some(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|e| invalid(format!("{text:?} is not a whole number of seconds ({e})")))?,
    }
    .max(ZIP_EPOCH);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let too_late = || {
        invalid(format!(
            "{seconds} is after 2107, the last year a zip holds"
        ))
    };
    let year = u16::try_from(year).map_err(|_| too_late())?;
    DateTime::from_date_and_time(
        year,
        month,
        day,
        u8::try_from(second_of_day / 3600).expect("an hour of the day fits a u8"),
        u8::try_from(second_of_day / 60 % 60).expect("a minute fits a u8"),
        u8::try_from(second_of_day % 60).expect("a second fits a u8"),
    )
    .map_err(|_| too_late())
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): exact for every day, with no calendar crate.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        year,
        u8::try_from(month).expect("a month is 1..=12"),
        u8::try_from(day).expect("a day is 1..=31"),
    )
}

/// Writes `root` to `out` as a zip with every entry dated `time`. Writes `<out>.tmp` first and
/// renames it, so `out` is never a half-written archive.
pub fn write(root: &AppRoot, out: &Path, time: DateTime) -> Result<()> {
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);

    let mut zip = ZipWriter::new(File::create(&tmp).map_err(Error::io(&tmp))?);
    for file in root.files() {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(9))
            .system(System::Unix)
            .unix_permissions(file.mode)
            .last_modified_time(time);
        zip.start_file(file.name.as_str(), options)
            .map_err(Error::zip(&tmp))?;
        let mut source = File::open(&file.source).map_err(Error::io(&file.source))?;
        io::copy(&mut source, &mut zip).map_err(Error::io(&file.source))?;
    }
    zip.finish().map_err(Error::zip(&tmp))?;
    fs::rename(&tmp, out).map_err(Error::io(out))
}

/// One entry of a zip file, as `make package` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path in the archive.
    pub name: String,
    /// Its unix mode (file type and permission bits), if the archive records one.
    pub unix_mode: Option<u32>,
    /// Its size.
    pub size: u64,
    /// Its size in the archive.
    pub compressed_size: u64,
    /// Its timestamp.
    pub modified: Option<DateTime>,
}

/// The entries of the zip file at `path`, in archive order.
pub fn entries(path: &Path) -> Result<Vec<Entry>> {
    let file = File::open(path).map_err(Error::io(path))?;
    let mut archive = ZipArchive::new(file).map_err(Error::zip(path))?;
    (0..archive.len())
        .map(|i| {
            let entry = archive.by_index_raw(i).map_err(Error::zip(path))?;
            Ok(Entry {
                name: entry.name().map_err(Error::zip(path))?.into_owned(),
                unix_mode: entry.unix_mode(),
                size: entry.size(),
                compressed_size: entry.compressed_size(),
                modified: entry.last_modified(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_root::{HANDLER, ScratchProject};
    use std::io::Read;

    fn date(time: DateTime) -> (u16, u8, u8, u8, u8, u8) {
        (
            time.year(),
            time.month(),
            time.day(),
            time.hour(),
            time.minute(),
            time.second(),
        )
    }

    #[test]
    fn timestamps_come_from_source_date_epoch_in_utc() {
        let cases = [
            (None, (1980, 1, 6, 0, 0, 0)),
            (Some("1700000000"), (2023, 11, 14, 22, 13, 20)),
            (Some("951782400"), (2000, 2, 29, 0, 0, 0)),
            (Some(" 1735689599\n"), (2024, 12, 31, 23, 59, 58)), // zip stores even seconds
            (Some("0"), (1980, 1, 1, 0, 0, 0)),                  // clamped to the zip epoch
            (Some("-86400"), (1980, 1, 1, 0, 0, 0)),
        ];
        for (epoch, expected) in cases {
            let time = timestamp(epoch).unwrap_or_else(|e| panic!("{epoch:?}: {e}"));
            assert_eq!(date(time), expected, "SOURCE_DATE_EPOCH={epoch:?}");
        }
    }

    #[test]
    fn a_source_date_epoch_that_is_no_zip_time_is_refused_naming_it() {
        for epoch in ["", "yesterday", "1.5", "4354819200", "99999999999999999999"] {
            let error = timestamp(Some(epoch)).expect_err(epoch);
            assert!(
                error.to_string().starts_with("SOURCE_DATE_EPOCH: "),
                "{epoch:?}: {error}"
            );
        }
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28)); // 2100 is no leap year
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
    }

    #[test]
    fn the_archive_holds_the_app_root_in_order_with_modes_and_one_time() {
        let project = ScratchProject::new("archive", &["GetA", "getB"]);
        let root = project.app_root().expect("collect");
        let zip_path = project.dir.join("dist/handler.zip");
        let time = timestamp(Some("1700000000")).expect("time");
        write(&root, &zip_path, time).expect("write");

        let listed = entries(&zip_path).expect("list");
        let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "host.json",
                HANDLER,
                "GetA/function.json",
                "getB/function.json"
            ]
        );
        for entry in &listed {
            let expected = if entry.name == HANDLER {
                0o100_755
            } else {
                0o100_644
            };
            assert_eq!(entry.unix_mode, Some(expected), "{}", entry.name);
            assert_eq!(entry.modified.map(date), Some(date(time)), "{}", entry.name);
        }

        let mut archive = ZipArchive::new(File::open(&zip_path).expect("open")).expect("zip");
        for file in root.files() {
            let mut bytes = Vec::new();
            archive
                .by_name(&file.name)
                .expect("entry")
                .read_to_end(&mut bytes)
                .expect("inflate");
            assert_eq!(
                bytes,
                fs::read(&file.source).expect("source"),
                "{}",
                file.name
            );
        }
        assert!(!project.dir.join("dist/handler.zip.tmp").exists());
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let project = ScratchProject::new("deterministic", &["GetA"]);
        let root = project.app_root().expect("collect");
        let time = timestamp(None).expect("time");
        let first = project.dir.join("first.zip");
        let second = project.dir.join("second.zip");
        write(&root, &first, time).expect("write");
        // A source file rewritten (new mtime, same bytes) must not change the archive.
        let host = project.dir.join("host.json");
        fs::write(&host, fs::read(&host).expect("read")).expect("rewrite");
        write(&root, &second, time).expect("write");
        assert_eq!(
            fs::read(first).expect("read"),
            fs::read(second).expect("read")
        );
    }
}
