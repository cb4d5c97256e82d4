//! Thin glue: parse the command line, build the runtime, call the library, map errors to exit codes.

use std::process::ExitCode;

use anyhow::Context;
use batchmirror::cli::{Cli, Command, LogArgs};
use batchmirror::config;
use batchmirror::error::Error;
#[cfg(feature = "sandbox")]
use batchmirror::lab::{self, LabCommand};
use batchmirror::{daemon, telemetry};
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("batchmirror: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli.command, &cli.log)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = err
                .chain()
                .find_map(|e| e.downcast_ref::<Error>())
                .map_or(1, Error::exit_code);
            eprintln!("batchmirror: {err:#}");
            ExitCode::from(code as u8)
        }
    }
}

fn load(path: &std::path::Path, log: &LogArgs) -> anyhow::Result<config::Settings> {
    let settings = config::load(path).map_err(Error::from)?;
    logs(log, settings.log.format, &settings.log.level);
    tracing::debug!(
        "config {} loaded: {} provider(s)",
        path.display(),
        settings.providers.len()
    );
    for warning in config::warnings(&settings, path) {
        tracing::warn!("{warning}");
    }
    Ok(settings)
}

/// Starts logging with `-v`/`-q`/`--log-format` over the config's (or the command's) choice.
fn logs(log: &LogArgs, format: config::LogFormat, level: &str) {
    let level = match log.level() {
        Some(l) => telemetry::Level::Cli(l),
        None => telemetry::Level::Config(level),
    };
    telemetry::init(log.format(format), level);
}

async fn dispatch(command: Command, log: &LogArgs) -> anyhow::Result<u8> {
    let shutdown = CancellationToken::new();
    match command {
        Command::Run(c) => {
            let settings = load(&c.config, log)?;
            let (_, reload) = daemon::cancel_or_reload_on_signals(shutdown.clone(), &c.config)?;
            daemon::run_reloading(settings, Some(reload), shutdown).await?;
            Ok(0)
        }
        Command::Sync {
            once: _,
            dry_run,
            json,
            config,
        } => {
            let settings = load(&config.config, log)?;
            let stop = daemon::cancel_on_signals(shutdown.clone())?;
            if dry_run {
                let plan = daemon::dry_run(&settings, &shutdown).await?;
                if json {
                    println!("{}", plan.to_json());
                } else {
                    print!("{}", plan.render_text());
                }
                return Ok(stop.exit_code().unwrap_or(plan.exit_code() as u8));
            }
            let report = daemon::sync_once(settings, shutdown).await?;
            println!("{}", report.summary());
            for line in report.unmirrored_lines() {
                println!("  not mirrored: {line}");
            }
            if let Some(code) = stop.exit_code() {
                println!("interrupted by a signal after draining: exit {code}");
                return Ok(code);
            }
            Ok(report.exit_code() as u8)
        }
        Command::Status {
            config,
            json,
            items: true,
            state,
            provider,
            limit,
        } => {
            let settings = load(&config.config, log)?;
            let filter = state.unwrap_or_default();
            let report =
                daemon::StatusReport::items(&settings, filter, provider.as_deref(), limit).await?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            Ok(0)
        }
        Command::Status { config, json, .. } => {
            let settings = load(&config.config, log)?;
            let report = daemon::status(&settings).await?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            Ok(0)
        }
        Command::Verify {
            config,
            provider,
            repair,
            json,
        } => {
            let settings = load(&config.config, log)?;
            let opts = daemon::VerifyOptions {
                progress: true,
                ..daemon::VerifyOptions::new(provider, repair)
            };
            let report = daemon::verify(&settings, opts).await?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_text());
            }
            Ok(report.exit_code() as u8)
        }
        Command::CheckConfig(c) => {
            let settings = load(&c.config, log)?;
            print!("{settings}");
            for checked in daemon::preflight(&settings)? {
                eprintln!("{checked}");
            }
            eprintln!("config {} is valid", c.config.display());
            Ok(0)
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                None => clap_mangen::Man::new(cmd)
                    .render(&mut std::io::stdout())
                    .context("writing the man page")?,
                Some(dir) => {
                    clap_mangen::generate_to(cmd, &dir)
                        .with_context(|| format!("writing man pages into {}", dir.display()))?;
                    println!("man pages written to {}", dir.display());
                }
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "batchmirror", &mut std::io::stdout());
            Ok(0)
        }
        #[cfg(feature = "sandbox")]
        Command::Lab(c) => lab(c, log, shutdown).await,
    }
}

/// The commands of the harnesses, behind the `sandbox` feature.
#[cfg(feature = "sandbox")]
async fn lab(
    command: LabCommand,
    log: &LogArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<u8> {
    use batchmirror::config::LogFormat;

    match command {
        LabCommand::Demo => {
            logs(log, LogFormat::Text, "error");
            daemon::cancel_on_signals(shutdown.clone())?;
            let dir = std::env::current_dir().context("current directory")?;
            let summary = lab::demo(&dir, shutdown).await?;
            println!("demo: {summary}");
            println!(
                "results are in ./demo-mirror/<provider>/<batch>/<item>.json; try `ls demo-mirror/*/`"
            );
            Ok(0)
        }
        LabCommand::Bench(a) => {
            logs(log, LogFormat::Text, "warn");
            lab::bench::run(&a).await?;
            Ok(0)
        }
        LabCommand::Crashloop(a) => {
            logs(log, LogFormat::Text, "warn");
            let daemon = std::env::current_exe().context("the path of this binary")?;
            let opts = a.into_options(daemon);
            eprintln!(
                "crashloop seed={} loops={}: starting",
                opts.seed, opts.loops
            );
            // Dropping the loop on Ctrl-C kills its daemon too (kill_on_drop), leaving no orphan.
            daemon::cancel_on_signals(shutdown.clone())?;
            let verdict = tokio::select! {
                v = lab::crashloop::crashloop(opts) => v?,
                () = shutdown.cancelled() => return Ok(130),
            };
            println!("{}", verdict.line());
            for line in verdict.details() {
                println!("{line}");
            }
            Ok(if verdict.passed() { 0 } else { 1 })
        }
        LabCommand::Sandbox(a) => {
            logs(log, LogFormat::Text, "info");
            let generated = a.generated();
            daemon::cancel_on_signals(shutdown.clone())?;
            let stop = shutdown.cancelled_owned();
            batchmirror_sandbox::serve_until(&a.provider, &generated, a.listen, stop)
                .await
                .with_context(|| format!("{} sandbox", a.provider))?;
            Ok(0)
        }
    }
}
