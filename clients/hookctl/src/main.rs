//! `hookctl`: the hookplane admin CLI over `hookplane-client`. Commands live in `commands/`,
//! each turning flags into one request and its answer into a table, `key: value` lines or JSON.

mod cli;
mod commands;
mod failure;
mod flag_values;
mod output;
mod paging;
mod proto_json;
mod table;
mod token;

use std::{
    io::{self, Write},
    process::ExitCode,
};

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let json = cli.global.json;
    match cli::run(cli).await {
        Ok(printout) => {
            let rendered = printout.render(json);
            if let Some(note) = rendered.stderr {
                eprintln!("{note}");
            }
            // A closed pipe (`| head`) is not worth a panic; the exit status tells.
            let mut stdout = io::stdout().lock();
            match stdout
                .write_all(rendered.stdout.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(err) => {
            eprintln!("{}", failure::describe(&err));
            ExitCode::FAILURE
        }
    }
}
