//! Which build of a provider binary (PKCS#11 module, EKM provider) is installed: its GNU
//! build-id note and its `DT_SONAME`, read with the `object` crate from the bytes the caller
//! read. Pure: no I/O, never panics on a malformed file (that is an `Err` with the reason).

use object::elf::{DT_SONAME, NT_GNU_BUILD_ID, PT_NOTE, SHT_DYNAMIC, SHT_NOTE};
use object::read::elf::{Dyn, ElfFile, FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, FileKind};

/// What identifies a build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfFacts {
    /// The GNU build-id, lower-case hex.
    pub build_id: Option<String>,
    pub soname: Option<String>,
}

/// Read the build-id and SONAME of the ELF file in `data`.
pub fn elf_facts(data: &[u8]) -> Result<ElfFacts, String> {
    match FileKind::parse(data).map_err(|e| format!("not an ELF file: {e}"))? {
        FileKind::Elf64 => read::<object::elf::FileHeader64<Endianness>>(data),
        FileKind::Elf32 => read::<object::elf::FileHeader32<Endianness>>(data),
        other => Err(format!("not an ELF file ({other:?})")),
    }
}

fn read<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ElfFacts, String> {
    let file = ElfFile::<H>::parse(data).map_err(|e| format!("malformed ELF: {e}"))?;
    let endian = file.endian();
    let header = file.elf_header();
    let mut out = ElfFacts::default();
    // Sections first (they name the string table directly); stripped files may lack them,
    // then the program headers answer for the build-id.
    let sections = header
        .sections(endian, data)
        .map_err(|e| format!("malformed ELF sections: {e}"))?;
    for section in sections.iter() {
        match section.sh_type(endian) {
            SHT_NOTE if out.build_id.is_none() => {
                if let Ok(Some(mut notes)) = section.notes(endian, data) {
                    while let Ok(Some(note)) = notes.next() {
                        if note.name() == b"GNU" && note.n_type(endian) == NT_GNU_BUILD_ID {
                            out.build_id = Some(hex::encode(note.desc()));
                            break;
                        }
                    }
                }
            }
            SHT_DYNAMIC if out.soname.is_none() => {
                if let Ok(Some((dyns, link))) = section.dynamic(endian, data) {
                    let strings = sections.strings(endian, data, link).ok();
                    for d in dyns {
                        if d.is_string(endian) && d.tag32(endian) == Some(DT_SONAME) {
                            if let Some(s) =
                                strings.as_ref().and_then(|st| d.string(endian, *st).ok())
                            {
                                out.soname = Some(crate::sanitize::escape(s).into_owned());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if out.build_id.is_none() {
        if let Ok(segments) = header.program_headers(endian, data) {
            for seg in segments {
                if seg.p_type(endian) != PT_NOTE {
                    continue;
                }
                if let Ok(Some(mut notes)) = seg.notes(endian, data) {
                    while let Ok(Some(note)) = notes.next() {
                        if note.name() == b"GNU" && note.n_type(endian) == NT_GNU_BUILD_ID {
                            out.build_id = Some(hex::encode(note.desc()));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(elf_facts(b"").is_err());
        assert!(elf_facts(b"\x7fELF\x02\x01\x01").is_err());
        assert!(elf_facts(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn reads_the_build_id_and_soname_of_a_system_library() {
        // Any shared library on the build host will do; skip when none is where expected.
        let candidates = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
            "/usr/lib64/libc.so.6",
        ];
        let Some(data) = candidates.iter().find_map(|p| std::fs::read(p).ok()) else {
            eprintln!("skipped: no libc.so.6 found");
            return;
        };
        let f = elf_facts(&data).unwrap();
        assert_eq!(f.soname.as_deref(), Some("libc.so.6"));
        assert!(
            f.build_id.as_deref().is_some_and(|b| b.len() >= 16),
            "{f:?}"
        );
    }
}
