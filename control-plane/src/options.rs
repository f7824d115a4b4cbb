//! The control plane's flags (and their `HOOKPLANE_*` environment variables).

use std::path::PathBuf;

/// Flags of the control plane; the binary flattens this into `hookplane control` and
/// `hookplane standalone`.
#[derive(clap::Args, Clone)]
pub struct ControlOptions {
    /// Directory of the store, the master key and generated tokens.
    #[arg(long, env = "HOOKPLANE_DATA_DIR", default_value = "./hookplane-data")]
    pub data_dir: PathBuf,
    /// Bearer token of the admin services; generated into `<data-dir>/admin.token` when unset.
    #[arg(long, env = "HOOKPLANE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding --admin-token (keeps it off the command line).
    #[arg(long, env = "HOOKPLANE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Bearer token data-plane nodes present; generated into `<data-dir>/node.token` when unset.
    #[arg(long, env = "HOOKPLANE_NODE_TOKEN", hide_env_values = true)]
    pub node_token: Option<String>,
    /// A file holding --node-token.
    #[arg(long, env = "HOOKPLANE_NODE_TOKEN_FILE")]
    pub node_token_file: Option<PathBuf>,
    /// Bearer token of event publishers on nodes; generated into `<data-dir>/publisher.token` when unset.
    #[arg(long, env = "HOOKPLANE_PUBLISHER_TOKEN", hide_env_values = true)]
    pub publisher_token: Option<String>,
    /// A file holding --publisher-token.
    #[arg(long, env = "HOOKPLANE_PUBLISHER_TOKEN_FILE")]
    pub publisher_token_file: Option<PathBuf>,
    /// Key sealing secrets at rest: 32 bytes as base64 or 64 hex characters; generated into
    /// `<data-dir>/master.key` when unset.
    #[arg(long, env = "HOOKPLANE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// A file holding --master-key.
    #[arg(long, env = "HOOKPLANE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The master key being rotated away from: values sealed under it still open, and are
    /// re-sealed under --master-key in the background (logged `re-seal done`); then it is no
    /// longer needed.
    #[arg(long, env = "HOOKPLANE_PREVIOUS_MASTER_KEY", hide_env_values = true)]
    pub previous_master_key: Option<String>,
    /// A file holding --previous-master-key.
    #[arg(long, env = "HOOKPLANE_PREVIOUS_MASTER_KEY_FILE")]
    pub previous_master_key_file: Option<PathBuf>,
    /// Delivery attempts kept per forwarding set or subscription.
    #[arg(
        long,
        env = "HOOKPLANE_ATTEMPT_RETENTION_COUNT",
        default_value_t = 1000
    )]
    pub attempt_retention_count: usize,
    /// Delivery attempts older than this are dropped.
    #[arg(long, env = "HOOKPLANE_ATTEMPT_RETENTION_AGE", default_value = "7d")]
    pub attempt_retention_age: humantime::Duration,
    /// How long reported attempts may wait in memory to be written to the attempt log together
    /// (only each target's newest retention count is written): what a crash of the control plane
    /// may forget of the log. 0s writes every report as it comes.
    #[arg(long, env = "HOOKPLANE_ATTEMPT_LOG_HOLD", default_value = "1s")]
    pub attempt_log_hold: humantime::Duration,
    /// SMTP server for notification emails: `smtp://host:port` (plain), `smtp://host:port?tls=required`
    /// (STARTTLS), `smtps://host:port` (implicit TLS), with `user:pass@` to log in. Unset: notices
    /// are only logged and kept.
    #[arg(long, env = "HOOKPLANE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The From of notification emails.
    #[arg(
        long,
        env = "HOOKPLANE_SMTP_FROM",
        default_value = "hookplane <noreply@localhost>"
    )]
    pub smtp_from: String,
    /// A tenant emailed a failure reminder within this window is not emailed again before it ends.
    #[arg(long, env = "HOOKPLANE_NOTIFY_WINDOW", default_value = "1h")]
    pub notify_window: humantime::Duration,
    /// How often every tenant whose forwards failed during the period and still fail is emailed.
    #[arg(long, env = "HOOKPLANE_FAILURE_SWEEP_INTERVAL", default_value = "7d")]
    pub failure_sweep_interval: humantime::Duration,
    /// A subscription whose every delivery attempt has failed for this long is stopped by the
    /// system (its tenant is told).
    #[arg(
        long,
        env = "HOOKPLANE_SUBSCRIPTION_FAILURE_STOP_AFTER",
        default_value = "5d"
    )]
    pub subscription_failure_stop_after: humantime::Duration,
    /// Audit events (admin writes, secret reveals and rotations, token changes) older than this
    /// are removed.
    #[arg(long, env = "HOOKPLANE_AUDIT_RETENTION", default_value = "365d")]
    pub audit_retention: humantime::Duration,
}

impl ControlOptions {
    /// The defaults of every flag, with `data_dir` as given (for tests and embedding).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> ControlOptions {
        ControlOptions {
            data_dir: data_dir.into(),
            admin_token: None,
            admin_token_file: None,
            node_token: None,
            node_token_file: None,
            publisher_token: None,
            publisher_token_file: None,
            master_key: None,
            master_key_file: None,
            previous_master_key: None,
            previous_master_key_file: None,
            attempt_retention_count: 1000,
            attempt_retention_age: std::time::Duration::from_secs(7 * 24 * 3600).into(),
            attempt_log_hold: std::time::Duration::from_secs(1).into(),
            smtp_url: None,
            smtp_from: "hookplane <noreply@localhost>".to_owned(),
            notify_window: std::time::Duration::from_secs(3600).into(),
            failure_sweep_interval: std::time::Duration::from_secs(7 * 24 * 3600).into(),
            subscription_failure_stop_after: std::time::Duration::from_secs(5 * 24 * 3600).into(),
            audit_retention: std::time::Duration::from_secs(365 * 24 * 3600).into(),
        }
    }
}

/// Shows whether a secret is set, never its value.
struct Redacted<'a>(&'a Option<String>);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(<redacted>)"),
            None => f.write_str("None"),
        }
    }
}

impl std::fmt::Debug for ControlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlOptions")
            .field("data_dir", &self.data_dir)
            .field("admin_token", &Redacted(&self.admin_token))
            .field("node_token", &Redacted(&self.node_token))
            .field("publisher_token", &Redacted(&self.publisher_token))
            .field("master_key", &Redacted(&self.master_key))
            .field("previous_master_key", &Redacted(&self.previous_master_key))
            .field("admin_token_file", &self.admin_token_file)
            .field("node_token_file", &self.node_token_file)
            .field("publisher_token_file", &self.publisher_token_file)
            .field("master_key_file", &self.master_key_file)
            .field("previous_master_key_file", &self.previous_master_key_file)
            .field("attempt_retention_count", &self.attempt_retention_count)
            .field("attempt_retention_age", &self.attempt_retention_age)
            .field("attempt_log_hold", &self.attempt_log_hold)
            .field(
                "smtp_url",
                &self.smtp_url.as_deref().map(crate::notify::redacted_url),
            )
            .field("smtp_from", &self.smtp_from)
            .field("notify_window", &self.notify_window)
            .field("failure_sweep_interval", &self.failure_sweep_interval)
            .field(
                "subscription_failure_stop_after",
                &self.subscription_failure_stop_after,
            )
            .field("audit_retention", &self.audit_retention)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let mut opts = ControlOptions::with_data_dir("/tmp/x");
        opts.admin_token = Some("hp_admin_visible".into());
        opts.master_key = Some("key-material".into());
        opts.previous_master_key = Some("old-key-material".into());
        let shown = format!("{opts:?}");
        assert!(!shown.contains("hp_admin_visible"));
        assert!(!shown.contains("key-material"));
        assert!(shown.contains("Some(<redacted>)"));
    }

    #[test]
    fn debug_never_prints_the_smtp_password() {
        let mut opts = ControlOptions::with_data_dir("/tmp/x");
        opts.smtp_url = Some("smtps://mailer:s3cret-pass@smtp.example.com:465".into());
        let shown = format!("{opts:?}");
        assert!(!shown.contains("s3cret-pass"), "{shown}");
        assert!(shown.contains("smtp.example.com"), "{shown}");
    }

    #[test]
    fn retention_age_default_is_seven_days() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            control: ControlOptions,
        }
        let cli = Cli::try_parse_from(["hookplane"]).unwrap();
        assert_eq!(
            *cli.control.attempt_retention_age,
            std::time::Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(cli.control.attempt_retention_count, 1000);
    }

    #[test]
    fn notification_defaults_are_an_hour_window_and_a_weekly_sweep() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            control: ControlOptions,
        }
        let cli = Cli::try_parse_from(["hookplane"]).unwrap();
        assert_eq!(
            *cli.control.notify_window,
            std::time::Duration::from_secs(3600)
        );
        assert_eq!(
            *cli.control.failure_sweep_interval,
            std::time::Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(cli.control.smtp_from, "hookplane <noreply@localhost>");
        assert!(cli.control.smtp_url.is_none());
    }

    #[test]
    fn a_subscription_failing_for_five_days_is_stopped_by_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            control: ControlOptions,
        }
        let cli = Cli::try_parse_from(["hookplane"]).unwrap();
        assert_eq!(
            *cli.control.subscription_failure_stop_after,
            std::time::Duration::from_secs(5 * 24 * 3600)
        );
        assert_eq!(
            *ControlOptions::with_data_dir("/x").subscription_failure_stop_after,
            std::time::Duration::from_secs(5 * 24 * 3600)
        );
    }

    #[test]
    fn audit_events_are_kept_a_year_by_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            control: ControlOptions,
        }
        let cli = Cli::try_parse_from(["hookplane"]).unwrap();
        let year = std::time::Duration::from_secs(365 * 24 * 3600);
        assert_eq!(*cli.control.audit_retention, year);
        assert_eq!(*ControlOptions::with_data_dir("/x").audit_retention, year);
    }
}
