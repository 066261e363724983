//! The `agentgate` command: `serve` and `keygen`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentgate::clock::SystemClock;
use agentgate::config::{self, KeySource, Settings};
use agentgate::cursor::keyring::generate_key_line;
use agentgate::startup::Application;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentgate",
    version,
    about = "A stateless, cursor-based AI agent gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (TOML).
        #[arg(long, env = "AGENTGATE_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// GET a health endpoint; exit 0 when it answers 200, 1 otherwise. For
    /// container health checks in images that have no curl.
    Probe {
        /// The URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout_seconds: u64,
    },
    /// Print a new cursor key as `kid:BASE64` for AGENTGATE_CURSOR_KEYS.
    Keygen {
        /// Key id (1-32 of [A-Za-z0-9_-]); defaults to today's date.
        #[arg(long)]
        kid: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen { kid } => {
            let kid = kid.unwrap_or_else(|| format!("k{}", chrono::Utc::now().format("%Y%m%d")));
            if !agentgate::cursor::keyring::valid_kid(&kid) {
                eprintln!("error: kid must be 1 to 32 characters of [A-Za-z0-9_-]");
                return ExitCode::from(2);
            }
            println!("{}", generate_key_line(&kid));
            ExitCode::SUCCESS
        }
        Command::Probe {
            url,
            timeout_seconds,
        } => probe(&url, timeout_seconds).await,
        Command::Serve { config } => match serve(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn probe(url: &str, timeout_seconds: u64) -> ExitCode {
    agentgate::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(timeout_seconds.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let outcome = match client {
        Ok(client) => client.get(url).send().await.map(|r| r.status()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(status) if status == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{url}: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load(&path)?;
    let telemetry = agentgate::telemetry::init(&settings.log);
    let result = run(path, settings).await;
    // Flush the spans still buffered (the exporter blocks: not on a runtime thread).
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn run(path: PathBuf, settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).ok();
    let (keys, source) = config::load_keyring(&settings.cursor, env)?;
    if source == KeySource::Ephemeral {
        tracing::warn!(
            "NO CURSOR KEYS CONFIGURED: using an ephemeral key. Cursors issued by this process \
             cannot be opened by any other replica or after a restart. Set AGENTGATE_CURSOR_KEYS \
             for anything but local development."
        );
    }
    tracing::info!(
        active_kid = keys.active().kid(),
        keys = keys.keys().len(),
        agents = settings.agents.len(),
        auth = ?settings.auth.mode,
        "starting agentgate"
    );
    if settings.auth.mode == config::AuthMode::None {
        tracing::warn!(
            "authentication is OFF ([auth] mode = \"none\"): every caller is \"anonymous\""
        );
    }
    let app = Application::build(settings, keys, Arc::new(SystemClock), &env)?;
    // SIGHUP re-reads this file (agents, providers, tools, [auth]).
    let _ = app.state().config_path.set(path);
    app.run_until_stopped().await?;
    Ok(())
}
