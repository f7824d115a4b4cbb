use std::{
    fs,
    io::{self, Read},
    path::PathBuf,
};

use anyhow::Context;
use clap::{Args, Subcommand};
use hookplane_verify::line;

use crate::output::Printout;

/// LINE webhook helpers that need no server.
#[derive(Debug, Subcommand)]
pub enum LineCommand {
    /// Print the x-line-signature of a body's exact bytes.
    Sign(SignArgs),
}

#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub secret: SecretSource,
    /// The body to sign, byte for byte; standard input when left out.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// Exactly one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SecretSource {
    /// The channel secret.
    #[arg(long)]
    pub secret: Option<String>,
    /// A file holding the channel secret (surrounding whitespace is ignored).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
}

pub fn run(command: LineCommand) -> anyhow::Result<Printout> {
    match command {
        LineCommand::Sign(args) => sign(&args, &mut io::stdin().lock()),
    }
}

fn sign(args: &SignArgs, stdin: &mut impl Read) -> anyhow::Result<Printout> {
    let secret = match (&args.secret.secret, &args.secret.secret_file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!("give --secret or --secret-file"),
    };
    let body = match &args.file {
        Some(path) => fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let mut body = Vec::new();
            stdin
                .read_to_end(&mut body)
                .context("cannot read standard input")?;
            body
        }
    };
    Ok(Printout::Text(format!(
        "{}\n",
        line::sign(secret.as_bytes(), &body)
    )))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: LineCommand,
    }

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/line")
    }

    fn sign_args(args: &[&str]) -> SignArgs {
        let LineCommand::Sign(args) =
            Cli::try_parse_from(std::iter::once("line").chain(args.iter().copied()))
                .unwrap()
                .command;
        args
    }

    fn printed(printout: Printout) -> String {
        printout.render(false).stdout
    }

    #[test]
    fn sign_prints_the_signature_of_a_fixture_file() {
        let file = fixtures().join("text.json");
        let args = sign_args(&[
            "sign",
            "--secret",
            "0123456789abcdef0123456789abcdef",
            "--file",
            file.to_str().unwrap(),
        ]);
        let out = printed(sign(&args, &mut io::empty()).unwrap());
        assert_eq!(out, "QSwDoi32LtuyD6WmvYv/nL1SF85xwyQGbFI8qtZsyNM=\n");
    }

    #[test]
    fn sign_reads_the_body_from_stdin_without_a_file() {
        let args = sign_args(&["sign", "--secret", "test_secret"]);
        let mut stdin: &[u8] = br#"{"hello":"world"}"#;
        let out = printed(sign(&args, &mut stdin).unwrap());
        assert_eq!(out, "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM=\n");
    }

    #[test]
    fn sign_reads_the_secret_from_a_file_ignoring_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        fs::write(&secret_file, "test_secret\n").unwrap();
        let args = sign_args(&["sign", "--secret-file", secret_file.to_str().unwrap()]);
        let mut stdin: &[u8] = br#"{"hello":"world"}"#;
        let out = printed(sign(&args, &mut stdin).unwrap());
        assert_eq!(out, "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM=\n");
    }

    #[test]
    fn sign_output_is_the_same_with_json() {
        let args = sign_args(&["sign", "--secret", "test_secret"]);
        let mut stdin: &[u8] = br#"{"hello":"world"}"#;
        let rendered = sign(&args, &mut stdin).unwrap().render(true);
        assert_eq!(
            rendered.stdout,
            "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM=\n"
        );
    }

    #[test]
    fn sign_needs_exactly_one_secret_source() {
        assert!(Cli::try_parse_from(["line", "sign"]).is_err());
        assert!(
            Cli::try_parse_from(["line", "sign", "--secret", "a", "--secret-file", "b"]).is_err()
        );
    }
}
