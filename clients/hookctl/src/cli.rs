//! The command line: global flags, the subcommand tree, and dispatch to the command modules.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use hookplane_client::{Client, ClientTls};

use crate::{
    commands::{
        audit::{self, AuditArgs},
        channel::{self, ChannelCommand},
        deliveries::{self, AttemptsArgs, RecoverArgs},
        forwarding::{self, ForwardingCommand},
        line::{self, LineCommand},
        notifications::{self, NotificationsArgs},
        subscription::{self, SubscriptionCommand},
        tenant::{self, TenantCommand},
        tokens::{self, TokenCommand},
    },
    output::Printout,
    token,
};

/// Administer a hookplane control plane.
#[derive(Debug, Parser)]
#[command(name = "hookctl", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Kept apart in every subcommand's help, so its own flags read first.
const GLOBAL: &str = "Global options";

#[derive(Debug, Args)]
pub struct Global {
    /// The control plane's gRPC address: http://HOST:PORT, or https://HOST:PORT to dial TLS.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "HOOKPLANE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// The admin token, or an API token (`hp_tok_...`); default: the content of
    /// ./hookplane-data/admin.token.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "HOOKPLANE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A PEM file of CA certificates trusted, besides the system's roots, for an https://
    /// server (a control plane with a certificate of your own CA).
    #[arg(long, global = true, help_heading = GLOBAL, env = "HOOKPLANE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Print responses as proto3 JSON, as grpcurl does (lowerCamelCase names, enums by name).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(subcommand)]
    Tenant(TenantCommand),
    #[command(subcommand)]
    Channel(ChannelCommand),
    #[command(subcommand)]
    Forwarding(ForwardingCommand),
    #[command(subcommand)]
    Subscription(SubscriptionCommand),
    /// Delivery attempts of a forwarding set or a subscription, newest first.
    Attempts(AttemptsArgs),
    /// Re-enqueue a delivery that failed for good.
    RetryDelivery {
        /// A delivery id, as shown by `attempts`.
        id: String,
    },
    /// Re-enqueue every delivery of a forwarding set or subscription that failed for good since
    /// a time (after an outage of its endpoint), each with a fresh attempt budget.
    Recover(RecoverArgs),
    /// Emails sent (or logged) for a tenant.
    Notifications(NotificationsArgs),
    #[command(subcommand)]
    Token(TokenCommand),
    /// Audit events (admin writes, secret reveals and rotations, token changes), newest first.
    Audit(AuditArgs),
    #[command(subcommand)]
    Line(LineCommand),
}

pub async fn run(cli: Cli) -> anyhow::Result<Printout> {
    let command = match cli.command {
        // Offline: no token, no server.
        Command::Line(command) => return line::run(command),
        other => other,
    };
    let token = token::resolve(
        cli.global.token.as_deref(),
        Path::new(token::DEFAULT_TOKEN_FILE),
    )?;
    let tls = match &cli.global.ca_cert {
        Some(path) => ClientTls::new().with_ca_pem(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )?,
        None => ClientTls::new(),
    };
    let client = Client::connect_with(&cli.global.server, &token, &tls).await?;
    match command {
        Command::Tenant(c) => tenant::run(c, &client).await,
        Command::Channel(c) => channel::run(c, &client).await,
        Command::Forwarding(c) => forwarding::run(c, &client).await,
        Command::Subscription(c) => subscription::run(c, &client).await,
        Command::Attempts(args) => deliveries::attempts(args, &client).await,
        Command::RetryDelivery { id } => deliveries::retry(id, &client).await,
        Command::Recover(args) => deliveries::recover(args, &client).await,
        Command::Notifications(args) => notifications::run(args, &client).await,
        Command::Token(c) => tokens::run(c, &client).await,
        Command::Audit(args) => audit::run(args, &client).await,
        Command::Line(c) => line::run(c),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from([
            "hookctl",
            "tenant",
            "list",
            "--json",
            "--server",
            "http://h:1",
            "--token",
            "t",
        ])
        .unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.server, "http://h:1");
        assert_eq!(cli.global.token.as_deref(), Some("t"));
    }

    #[test]
    fn the_token_value_stays_out_of_help() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("HOOKPLANE_ADMIN_TOKEN"));
        assert!(!help.contains("HOOKPLANE_ADMIN_TOKEN="));
    }
}
