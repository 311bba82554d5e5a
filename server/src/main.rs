use std::process::ExitCode;

use runnel_server::Config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let matches = runnel_server::config::command().get_matches();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runnel: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runnel: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match runtime.block_on(runnel_server::run(config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel: {e}");
            ExitCode::FAILURE
        }
    }
}
