//! The `agentgate` command: `serve`, `keygen`, `probe`, and the operator
//! tools `cursor inspect` and `config check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentgate::clock::SystemClock;
use agentgate::config::{self, KeySource, Settings};
use agentgate::cursor::keyring::generate_key_line;
use agentgate::startup::Application;
use clap::{Parser, Subcommand};

mod chat;

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
        /// Config file (TOML). Without it: config/agentgate.toml under the
        /// working directory, ~/.config/agentgate/agentgate.toml,
        /// /etc/agentgate/agentgate.toml, or else the built-in development config.
        #[arg(long, env = "AGENTGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Chat with an agent in the terminal, over the Cognite API: answers
    /// stream as they arrive, the cursor is kept between turns, tool runs are
    /// shown, and client actions and confirmations are asked of you.
    /// Commands: /new, /save FILE, /load FILE, /undo, /quit.
    Chat {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The agent's id.
        #[arg(long)]
        agent: String,
        /// The project (default: the gateway's default project).
        #[arg(long)]
        project: Option<String>,
        /// A bearer token (API key or JWT), when the gateway checks callers.
        #[arg(long, env = "AGENTGATE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Operator tools for cursors.
    Cursor {
        #[command(subcommand)]
        command: CursorCommand,
    },
    /// Operator tools for config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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

#[derive(Subcommand)]
enum CursorCommand {
    /// Open a cursor with the configured keys and print what it holds (sizes,
    /// times, key id, the history summarised; never message text). Exits 1
    /// with the reason when it cannot be opened.
    Inspect {
        /// The cursor, or `-` to read it from standard input.
        token: String,
        /// The project (Cognite) or organisation (Quant) it was issued in.
        #[arg(long)]
        project: String,
        /// The agent it was issued for.
        #[arg(long)]
        agent: String,
        /// The caller it was issued to (`anonymous` with auth off).
        #[arg(long, default_value = "anonymous")]
        subject: String,
        /// Config file, for the cursor settings (found as `serve` finds it).
        #[arg(long, env = "AGENTGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Open it as at this time (unix seconds) instead of now: to see
        /// what an expired cursor held, or when it would expire.
        #[arg(long)]
        at: Option<i64>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file as `serve` would (with the AGENTGATE__*
    /// variables overlaid, provider and cursor keys read from the
    /// environment) and print every problem with its key. Exits 1 if any.
    Check {
        /// The config file.
        file: PathBuf,
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
        Command::Chat {
            url,
            agent,
            project,
            token,
        } => chat::run(&url, project.as_deref(), &agent, token).await,
        Command::Cursor {
            command:
                CursorCommand::Inspect {
                    token,
                    project,
                    agent,
                    subject,
                    config,
                    json,
                    at,
                },
        } => inspect(&token, &project, &agent, &subject, config, json, at),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let problems = agentgate::ops::check_config(&file);
            if problems.is_empty() {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    println!("{}: {p}", file.display());
                }
                ExitCode::FAILURE
            }
        }
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

/// The config `serve` uses: the named file, else the first one found, else the built-in one.
fn load_settings(
    path: Option<PathBuf>,
) -> Result<(Option<PathBuf>, Settings), config::ConfigError> {
    let path = path.or_else(|| config::find_config(|n| std::env::var(n).ok()));
    match path {
        Some(p) => Settings::load(&p).map(|s| (Some(p), s)),
        None => Settings::load_builtin().map(|s| (None, s)),
    }
}

fn inspect(
    token: &str,
    project: &str,
    agent: &str,
    subject: &str,
    config: Option<PathBuf>,
    json: bool,
    at: Option<i64>,
) -> ExitCode {
    let fail = |code: u8, message: String| {
        if json {
            println!("{}", serde_json::json!({"ok": false, "error": message}));
        } else {
            eprintln!("error: {message}");
        }
        ExitCode::from(code)
    };
    let token = if token == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            return fail(2, format!("reading the cursor from standard input: {e}"));
        }
        text.trim().to_owned()
    } else {
        token.to_owned()
    };
    let settings = match load_settings(config) {
        Ok((_, s)) => s,
        Err(e) => return fail(2, e.to_string()),
    };
    let keys = match config::load_keyring(&settings.cursor, |n| std::env::var(n).ok()) {
        Ok((_, KeySource::Ephemeral)) => {
            return fail(
                2,
                "no cursor keys: set AGENTGATE_CURSOR_KEYS (or AGENTGATE_CURSOR_KEYS_FILE) to the \
                 keys the gateway runs with"
                    .into(),
            );
        }
        Ok((keys, _)) => keys,
        Err(e) => return fail(2, e.to_string()),
    };
    let codec = agentgate::cursor::CursorCodec::new(
        Arc::new(keys),
        settings.cursor.ttl_seconds,
        settings.cursor.max_conversation_age_seconds,
    );
    let ctx = agentgate::cursor::CursorContext {
        project,
        agent,
        subject,
    };
    let now = at.unwrap_or_else(|| agentgate::clock::Clock::now(&SystemClock));
    match codec.inspect(&token, &ctx, now) {
        Ok(found) => {
            let summary = agentgate::ops::summarize(&found, now);
            if json {
                let mut v = summary;
                v["ok"] = serde_json::Value::Bool(true);
                println!("{v}");
            } else {
                print!("{}", agentgate::ops::render(&summary));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Authentication failing means a wrong key, project, agent or
            // subject, or a forged or altered token: the AEAD cannot tell which.
            let hint = match &e {
                agentgate::cursor::CursorError::Invalid(
                    agentgate::cursor::InvalidReason::Authentication,
                ) => {
                    " (wrong --project, --agent or --subject, another key with this kid, or an altered token)"
                }
                agentgate::cursor::CursorError::Invalid(
                    agentgate::cursor::InvalidReason::UnknownKid,
                ) => " (no configured key has this cursor's kid)",
                _ => "",
            };
            fail(1, format!("cannot open the cursor: {e}{hint}"))
        }
    }
}

async fn serve(path: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let (path, settings) = load_settings(path)?;
    let telemetry = agentgate::telemetry::init(&settings.log);
    if path.is_none() {
        tracing::warn!(
            "no config file found (looked for {}); running the built-in development config",
            config::config_candidates(|n| std::env::var(n).ok())
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let result = run(path, settings).await;
    // Flush the spans still buffered (the exporter blocks: not on a runtime thread).
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn run(path: Option<PathBuf>, settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
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
    // SIGHUP re-reads this file (agents, providers, tools, [auth]); the
    // built-in config has none to re-read.
    if let Some(path) = path {
        let _ = app.state().config_path.set(path);
    }
    app.run_until_stopped().await?;
    Ok(())
}
