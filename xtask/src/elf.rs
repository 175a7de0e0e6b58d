//! What the loader needs to run an ELF binary: the machine it is built for, its interpreter
//! (`PT_INTERP`), the shared libraries it names (`DT_NEEDED`) and the glibc symbol versions it
//! requires; and the rule the packaged handler must meet, a fully static x86-64 executable, which
//! runs on every Linux image the Functions host uses.
//!
//! It trusts nothing in the file: the `object` crate bounds-checks every offset and size, and a
//! header it cannot read is an error, never a guess. `cargo xtask package` refuses a handler that
//! breaks the rule; `tests/function_app.rs` reads the packaged binary with the same [`Linkage`].

use std::fmt;

use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _};

/// What the loader would need to run a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linkage {
    /// `e_machine`: what the binary is built for (62 for x86-64).
    pub machine: u16,
    /// The program interpreter (dynamic loader) it asks for, if any.
    pub interpreter: Option<String>,
    /// The shared libraries it names.
    pub needed: Vec<String>,
    /// The `GLIBC_x.y` symbol versions it requires, as `(x, y)`.
    pub glibc_versions: Vec<(u32, u32)>,
}

impl Linkage {
    /// Reads the linkage of the 64-bit ELF file `data`.
    pub fn read(data: &[u8]) -> Result<Self, object::read::Error> {
        let header = elf::FileHeader64::<object::Endianness>::parse(data)?;
        let endian = header.endian()?;
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

        let mut interpreter = None;
        for ph in header.program_headers(endian, data)? {
            if let Some(path) = ph.interpreter(endian, data)? {
                interpreter = Some(text(path));
            }
        }

        let sections = header.sections(endian, data)?;
        let dynamic = sections.dynamic_table(endian, data)?;
        let mut needed = Vec::new();
        for entry in dynamic.iter().filter(|d| d.tag == elf::DT_NEEDED) {
            needed.push(text(dynamic.string(entry)?));
        }

        let mut glibc_versions = Vec::new();
        if let Some((verneeds, link)) = sections.gnu_verneed(endian, data)? {
            let strings = sections.strings(endian, data, link)?;
            for verneed in verneeds {
                let (_, auxes) = verneed?;
                for aux in auxes {
                    let name = text(aux?.name(endian, strings)?);
                    glibc_versions.extend(parse_glibc_version(&name));
                }
            }
        }

        Ok(Self {
            machine: header.e_machine(endian).0,
            interpreter,
            needed,
            glibc_versions,
        })
    }

    /// Built for x86-64, the only architecture the Functions host offers Linux apps.
    pub fn is_x86_64(&self) -> bool {
        self.machine == elf::EM_X86_64.0
    }

    /// Needs neither a loader nor a shared library, so it runs on any Linux of its architecture.
    pub fn is_fully_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }

    /// The newest glibc symbol version it requires, if any.
    pub fn newest_glibc(&self) -> Option<(u32, u32)> {
        self.glibc_versions.iter().max().copied()
    }
}

/// `GLIBC_2.31` as `(2, 31)`; `GLIBC_2.2.5` as `(2, 2)`; other version names (`GCC_3.0`) as `None`.
pub fn parse_glibc_version(name: &str) -> Option<(u32, u32)> {
    let mut parts = name.strip_prefix("GLIBC_")?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// Why a binary cannot be the packaged handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a 64-bit ELF file whose headers can be read.
    Unreadable(String),
    /// Built for another architecture.
    NotX86_64 {
        /// Its `e_machine`.
        machine: u16,
    },
    /// Needs a loader or shared libraries.
    Dynamic {
        /// The interpreter it asks for.
        interpreter: Option<String>,
        /// The libraries it names.
        needed: Vec<String>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unreadable(problem) => write!(f, "not a 64-bit ELF file ({problem})"),
            Refusal::NotX86_64 { machine } => {
                write!(f, "not built for x86-64 (e_machine {machine})")
            }
            Refusal::Dynamic {
                interpreter,
                needed,
            } => write!(
                f,
                "dynamically linked (interpreter {}, needs {needed:?}); expected a static musl build",
                interpreter.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// The packaging rule: `data` is a fully static x86-64 ELF executable.
pub fn require_static_x86_64(data: &[u8]) -> Result<Linkage, Refusal> {
    let linkage = Linkage::read(data).map_err(|e| Refusal::Unreadable(e.to_string()))?;
    if !linkage.is_x86_64() {
        return Err(Refusal::NotX86_64 {
            machine: linkage.machine,
        });
    }
    if !linkage.is_fully_static() {
        return Err(Refusal::Dynamic {
            interpreter: linkage.interpreter,
            needed: linkage.needed,
        });
    }
    Ok(linkage)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PT_LOAD: u32 = 1;
    const PT_INTERP: u32 = 3;
    const HEADER_SIZE: usize = 64;
    const PROGRAM_HEADER_SIZE: usize = 56;

    /// A minimal little-endian ELF64 executable: a header, one `PT_LOAD` covering the file, and
    /// a `PT_INTERP` naming `interpreter` when given. No section headers, like a stripped binary
    /// can be. Enough for a loader's view, which is all `Linkage` reads.
    fn elf_file(machine: u16, interpreter: Option<&str>) -> Vec<u8> {
        let phnum = 1 + usize::from(interpreter.is_some());
        let interp_offset = HEADER_SIZE + phnum * PROGRAM_HEADER_SIZE;
        let interp = interpreter.map(|i| format!("{i}\0").into_bytes());
        let file_size = interp_offset + interp.as_ref().map_or(0, Vec::len);

        let mut data = Vec::with_capacity(file_size);
        data.extend_from_slice(b"\x7fELF");
        data.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        data.extend_from_slice(&machine.to_le_bytes());
        data.extend_from_slice(&1u32.to_le_bytes()); // e_version
        data.extend_from_slice(&0x40_1000u64.to_le_bytes()); // e_entry
        data.extend_from_slice(&(HEADER_SIZE as u64).to_le_bytes()); // e_phoff
        data.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no section headers
        data.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        data.extend_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
        data.extend_from_slice(&(PROGRAM_HEADER_SIZE as u16).to_le_bytes());
        data.extend_from_slice(&(phnum as u16).to_le_bytes());
        data.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        data.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
        data.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        assert_eq!(data.len(), HEADER_SIZE);

        let mut program_header = |p_type: u32, offset: usize, size: usize| {
            data.extend_from_slice(&p_type.to_le_bytes());
            data.extend_from_slice(&4u32.to_le_bytes()); // PF_R
            for field in [
                offset,
                0x40_0000 + offset,
                0x40_0000 + offset,
                size,
                size,
                0x1000,
            ] {
                data.extend_from_slice(&(field as u64).to_le_bytes());
            }
        };
        program_header(PT_LOAD, 0, file_size);
        if let Some(interp) = &interp {
            program_header(PT_INTERP, interp_offset, interp.len());
        }
        data.extend_from_slice(interp.as_deref().unwrap_or_default());
        assert_eq!(data.len(), file_size);
        data
    }

    #[test]
    fn a_static_x86_64_executable_is_accepted() {
        let linkage = require_static_x86_64(&elf_file(elf::EM_X86_64.0, None)).expect("accepted");
        assert!(linkage.is_x86_64() && linkage.is_fully_static());
        assert_eq!(linkage.newest_glibc(), None);
    }

    #[test]
    fn an_executable_with_an_interpreter_is_refused_naming_it() {
        let data = elf_file(elf::EM_X86_64.0, Some("/lib64/ld-linux-x86-64.so.2"));
        let linkage = Linkage::read(&data).expect("readable");
        assert_eq!(
            linkage.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        let refusal = require_static_x86_64(&data).expect_err("refused");
        assert_eq!(
            refusal,
            Refusal::Dynamic {
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".to_owned()),
                needed: Vec::new()
            }
        );
        assert!(refusal.to_string().contains("/lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn another_architecture_is_refused() {
        let data = elf_file(elf::EM_AARCH64.0, None);
        assert_eq!(
            require_static_x86_64(&data),
            Err(Refusal::NotX86_64 {
                machine: elf::EM_AARCH64.0
            })
        );
    }

    #[test]
    fn files_that_are_not_elf64_are_refused() {
        let mut elf32 = elf_file(elf::EM_X86_64.0, None);
        elf32[4] = 1; // ELFCLASS32
        for (what, data) in [
            ("a script", b"#!/bin/sh\necho hello\n".to_vec()),
            ("an empty file", Vec::new()),
            (
                "a truncated header",
                elf_file(elf::EM_X86_64.0, None)[..40].to_vec(),
            ),
            ("a 32-bit ELF file", elf32),
        ] {
            assert!(
                matches!(require_static_x86_64(&data), Err(Refusal::Unreadable(_))),
                "{what} must be refused as unreadable"
            );
        }
    }

    /// The test binary itself is linked dynamically against glibc: the real-world shape of the
    /// binary the packager must refuse, with `DT_NEEDED` and glibc versions from a real linker.
    #[test]
    #[cfg(target_env = "gnu")]
    fn this_dynamically_linked_test_binary_is_refused() {
        let exe = std::env::current_exe().expect("path of the test binary");
        let data = std::fs::read(&exe).expect("read the test binary");
        let linkage = Linkage::read(&data).expect("the test binary is an ELF file");
        assert!(
            linkage.needed.iter().any(|lib| lib.starts_with("libc.so")),
            "{linkage:?}"
        );
        assert!(linkage.newest_glibc().is_some(), "{linkage:?}");
        assert!(matches!(
            require_static_x86_64(&data),
            Err(Refusal::Dynamic { .. })
        ));
    }

    #[test]
    fn glibc_version_names_parse() {
        assert_eq!(parse_glibc_version("GLIBC_2.31"), Some((2, 31)));
        assert_eq!(parse_glibc_version("GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(parse_glibc_version("GLIBC_2.34"), Some((2, 34)));
        assert_eq!(parse_glibc_version("GCC_3.0"), None);
    }
}
