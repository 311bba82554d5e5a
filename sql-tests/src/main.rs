//! Runs the sqllogictest suite: every `.slt` file under `sql-tests/slt`
//! (or those whose path contains the filter argument), each against its own
//! freshly started `runnel` server.
//!
//! `cargo run -p runnel-sql-tests -- [FILTER] [--complete]`, from the root
//! of the checkout (it reads `sql-tests/slt` there).

use std::path::{Path, PathBuf};

use anyhow::Result;
use runnel_sql_tests::{SltDatabase, SltError, TestServer, runnel_binary};
use sqllogictest::{Runner, default_column_validator, default_normalizer, default_validator};

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            slt_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let filter = args.iter().find(|a| !a.starts_with("--")).cloned();
    let binary = runnel_binary()?;
    // The files of the checkout the runner is started in (the binary may
    // have been built from another one sharing the target directory).
    let local = Path::new("sql-tests/slt");
    let root = if local.is_dir() {
        local.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("slt")
    };
    let mut files = vec![];
    slt_files(&root, &mut files)?;
    files.sort();
    files.retain(|f| {
        filter
            .as_ref()
            .is_none_or(|p| f.to_string_lossy().contains(p.as_str()))
    });
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let server = TestServer::start(&binary)?;
        let db = SltDatabase::new(server).await?;
        let mut slot = Some(db);
        let mut runner = Runner::new(move || {
            let db = slot.take();
            async move { db.ok_or_else(|| SltError::new("one connection per file")) }
        });
        runner.with_column_validator(default_column_validator);
        let result = if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    default_validator,
                    default_normalizer,
                    default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(file)
                .await
                .map_err(|e| e.display(true).to_string())
        };
        match result {
            Ok(()) => {
                passed += 1;
                println!("ok      {name}");
            }
            Err(e) => {
                failed += 1;
                println!("FAILED  {name}\n{e}");
            }
        }
    }
    println!("sqllogictest: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
