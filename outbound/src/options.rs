//! The flags of outbound requests, flattened once into each command that sends to brand URLs.

/// Where deliveries and test events may go.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutboundOptions {
    /// A network (CIDR) that delivery targets may be in although it is private, loopback, ...
    /// (repeatable; the environment variable takes a comma-separated list).
    #[arg(
        long,
        env = "HOOKPLANE_ALLOW_TARGET_NETWORKS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub allow_target_network: Vec<ipnet::IpNet>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        outbound: OutboundOptions,
    }

    fn parse(args: &[&str]) -> OutboundOptions {
        Cli::try_parse_from(std::iter::once("hookplane").chain(args.iter().copied()))
            .unwrap()
            .outbound
    }

    #[test]
    fn no_network_is_allowed_by_default() {
        assert!(parse(&[]).allow_target_network.is_empty());
    }

    #[test]
    fn allowed_networks_repeat_and_split_on_commas() {
        let parsed = parse(&[
            "--allow-target-network",
            "127.0.0.0/8,10.0.0.0/8",
            "--allow-target-network",
            "fd00::/8",
        ]);
        assert_eq!(parsed.allow_target_network.len(), 3);
    }
}
