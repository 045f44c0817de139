//! The import allow-list: the WASI preview1 functions a shard may import and their exact
//! signatures. [`super::inspect`] refuses every other import before anything is compiled;
//! `wasi.rs` implements exactly these on the linker (its tests check the two agree). Kept
//! apart from `wasi.rs` because it needs no engine.

use wasmparser::ValType::{self, I32, I64};

use super::inspect::Signature;

/// The only import module name shards may use.
pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Signatures of every import hearth provides. `tests` check the linker against this table.
pub(crate) const IMPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("args_get", &[I32, I32], &[I32]),
    ("args_sizes_get", &[I32, I32], &[I32]),
    ("environ_get", &[I32, I32], &[I32]),
    ("environ_sizes_get", &[I32, I32], &[I32]),
    ("clock_res_get", &[I32, I32], &[I32]),
    ("clock_time_get", &[I32, I64, I32], &[I32]),
    ("fd_close", &[I32], &[I32]),
    ("fd_fdstat_get", &[I32, I32], &[I32]),
    ("fd_fdstat_set_flags", &[I32, I32], &[I32]),
    ("fd_filestat_get", &[I32, I32], &[I32]),
    ("fd_prestat_get", &[I32, I32], &[I32]),
    ("fd_prestat_dir_name", &[I32, I32, I32], &[I32]),
    ("fd_read", &[I32, I32, I32, I32], &[I32]),
    ("fd_write", &[I32, I32, I32, I32], &[I32]),
    ("fd_seek", &[I32, I64, I32, I32], &[I32]),
    ("fd_tell", &[I32, I32], &[I32]),
    ("fd_sync", &[I32], &[I32]),
    ("fd_datasync", &[I32], &[I32]),
    ("fd_readdir", &[I32, I32, I32, I64, I32], &[I32]),
    (
        "path_open",
        &[I32, I32, I32, I32, I32, I64, I64, I32, I32],
        &[I32],
    ),
    ("path_filestat_get", &[I32, I32, I32, I32, I32], &[I32]),
    ("path_create_directory", &[I32, I32, I32], &[I32]),
    ("path_remove_directory", &[I32, I32, I32], &[I32]),
    ("path_unlink_file", &[I32, I32, I32], &[I32]),
    ("path_rename", &[I32, I32, I32, I32, I32, I32], &[I32]),
    ("path_readlink", &[I32, I32, I32, I32, I32, I32], &[I32]),
    ("poll_oneoff", &[I32, I32, I32, I32], &[I32]),
    ("proc_exit", &[I32], &[]),
    ("proc_raise", &[I32], &[I32]),
    ("random_get", &[I32, I32], &[I32]),
    ("sched_yield", &[], &[I32]),
];

/// The signature hearth provides for `module::name`, or `None` if that import is forbidden.
pub(crate) fn import_signature(module: &str, name: &str) -> Option<Signature> {
    if module != WASI_MODULE {
        return None;
    }
    IMPORTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, params, results)| Signature { params, results })
}

/// Names of every provided import (for tests and docs).
pub fn provided_imports() -> impl Iterator<Item = &'static str> {
    IMPORTS.iter().map(|(n, _, _)| *n)
}
