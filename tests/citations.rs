//! Every fact the code relies on is cited from inside the repository: each
//! `docs/azure-behaviour.md §N` (or `§N.M`) in the code, the tests, the scripts and the docs names
//! a section that exists, and nothing cites the notes outside the repository that the document
//! replaced (a user's clone cannot reach them).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The document every citation points into.
const DOC: &str = "docs/azure-behaviour.md";

/// What is searched for citations: the code, the tests, the build and deployment scripts, the docs.
const SEARCHED: &[&str] = &[
    "src",
    "tests",
    "xtask",
    "docs",
    "infra",
    "bench",
    "benches",
    "fuzz",
    "scripts",
    "openapi",
    "README.md",
    "Makefile",
];

/// Files read: source and documentation text.
const EXTENSIONS: &[&str] = &[
    "rs", "md", "py", "sh", "bicep", "xml", "json", "yaml", "yml", "toml", "js", "mjs",
];

/// Installed or generated trees inside the searched folders.
const SKIPPED_DIRS: &[&str] = &[
    "node_modules",
    "target",
    "__pycache__",
    "corpus",
    "artifacts",
];

/// How the outside notes were cited, spelled so that this file does not cite them itself.
const OUTSIDE: [&str; 2] = [
    concat!("platform", "-facts"),
    concat!("platform", " facts §"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text_files(path: &Path, into: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || SKIPPED_DIRS.contains(&name) {
            return;
        }
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            text_files(&entry, into);
        }
    } else if path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e))
        || path.file_name().is_some_and(|n| n == "Makefile")
    {
        into.push(path.to_owned());
    }
}

/// Every searched file, as (path relative to the repository, text).
fn searched_files() -> Vec<(String, String)> {
    let mut paths = Vec::new();
    for entry in SEARCHED {
        text_files(&repo().join(entry), &mut paths);
    }
    assert!(paths.len() > 50, "found the repository's files: {paths:?}");
    paths
        .into_iter()
        .filter_map(|path| {
            let text = fs::read_to_string(&path).ok()?;
            let relative = path.strip_prefix(repo()).unwrap_or(&path);
            Some((relative.display().to_string(), text))
        })
        .collect()
}

/// The section numbers the document's headings define: `## §N …` and `### §N.M …`.
fn sections() -> BTreeSet<String> {
    let path = repo().join(DOC);
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{DOC} is the repository's record of Azure's behaviour: {e}"));
    text.lines()
        .filter_map(|line| {
            let heading = line
                .strip_prefix("### §")
                .or_else(|| line.strip_prefix("## §"))?;
            Some(section_number(heading).to_owned())
        })
        .filter(|number| !number.is_empty())
        .collect()
}

/// The `N` or `N.M` at the start of `text`.
fn section_number(text: &str) -> &str {
    let end = text
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_digit()
                || (c == '.' && text[i + 1..].starts_with(|d: char| d.is_ascii_digit())))
        })
        .map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// The sections one citation names: the run of `§N` right after a mention of the document —
/// `§7`, `§1.2`, `§7 and §10`, `§4, §5`, `§1.3/§11` — up to the first word that is not one.
fn cited_after(mention: &str) -> Vec<&str> {
    let mut rest = mention.strip_prefix(')').unwrap_or(mention);
    let mut cited = Vec::new();
    loop {
        let trimmed = rest.trim_start_matches([' ', ',', '/', '(']);
        let trimmed = trimmed.strip_prefix("and ").unwrap_or(trimmed);
        let Some(after) = trimmed.strip_prefix('§') else {
            return cited;
        };
        let number = section_number(after);
        if number.is_empty() {
            return cited;
        }
        cited.push(number);
        rest = &after[number.len()..];
    }
}

#[test]
fn every_citation_names_a_section_of_the_document() {
    let sections = sections();
    for number in 1..=15 {
        assert!(
            sections.contains(&number.to_string()),
            "{DOC} has §{number} (its sections keep their numbers): {sections:?}"
        );
    }
    let mut citations = 0;
    let mut broken = Vec::new();
    for (path, text) in searched_files() {
        for (line_number, line) in text.lines().enumerate() {
            let mut numbers: Vec<&str> = line
                .match_indices("azure-behaviour.md")
                .flat_map(|(at, found)| cited_after(&line[at + found.len()..]))
                .collect();
            if path == DOC {
                // Inside the document, a bare `§N` refers to its own sections.
                numbers.extend(
                    line.match_indices('§')
                        .filter(|(at, _)| {
                            !line[..*at].ends_with("## ") && !line[..*at].ends_with("# ")
                        })
                        .map(|(at, _)| section_number(&line[at + '§'.len_utf8()..]))
                        .filter(|n| !n.is_empty()),
                );
            }
            for number in numbers {
                citations += 1;
                if !sections.contains(number) {
                    broken.push(format!("{path}:{}: §{number}", line_number + 1));
                }
            }
        }
    }
    assert!(citations > 10, "found the citations ({citations})");
    assert!(
        broken.is_empty(),
        "citations of sections {DOC} does not have:\n{}",
        broken.join("\n")
    );
}

#[test]
fn nothing_cites_notes_outside_the_repository() {
    let mut found = Vec::new();
    for (path, text) in searched_files() {
        for (line_number, line) in text.lines().enumerate() {
            if OUTSIDE.iter().any(|outside| line.contains(outside)) {
                found.push(format!("{path}:{}: {}", line_number + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "cite {DOC} §N instead (a user's clone has no notes outside the repository):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_citation_is_read_up_to_the_first_word_that_is_not_a_section() {
    assert_eq!(cited_after(" §7 and §10)."), ["7", "10"]);
    assert_eq!(cited_after(" §4, §5)."), ["4", "5"]);
    assert_eq!(cited_after(") §1.3, §11 (host source"), ["1.3", "11"]);
    assert_eq!(cited_after(" §1.2: a non-zero exit"), ["1.2"]);
    assert_eq!(cited_after(" §8 records it."), ["8"]);
    assert_eq!(cited_after(" §4, v1 and v2 shapes"), ["4"]);
    assert_eq!(cited_after("` by section"), Vec::<&str>::new());
    assert_eq!(section_number("12. Several hubs"), "12");
    assert_eq!(section_number("1.7 Deploying"), "1.7");
}
