//! `hookctl token`: API tokens with a role and a tenant; a new token's secret is printed once.

use clap::{Args, Subcommand, ValueEnum};
use hookplane_client::{
    Client,
    v1::{
        CreateTokenRequest, ListTokensRequest, ListTokensResponse, RevokeTokenRequest, Role, Token,
    },
};

use crate::{
    flag_values,
    output::Printout,
    paging::{self, Paging},
    proto_json,
    table::Table,
};

/// API tokens: operators, tenant admins and publishers.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed this once.
    Create(CreateArgs),
    /// List tokens (a tenant admin token sees its own tenant's).
    List(ListArgs),
    /// Revoke a token: the control plane and every node refuse it from then on.
    Revoke { id: String },
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleFlag {
    /// Everything, for every tenant.
    Operator,
    /// The admin API for one tenant's resources.
    TenantAdmin,
    /// PublishEvent on nodes for one tenant.
    Publisher,
}

impl RoleFlag {
    fn role(self) -> Role {
        match self {
            RoleFlag::Operator => Role::Operator,
            RoleFlag::TenantAdmin => Role::TenantAdmin,
            RoleFlag::Publisher => Role::Publisher,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum)]
    pub role: RoleFlag,
    /// The tenant of a tenant-admin or publisher token.
    #[arg(long, required_if_eq_any = [("role", "tenant-admin"), ("role", "publisher")])]
    pub tenant: Option<String>,
    /// When the token stops working, such as 2027-12-31T00:00:00Z; default: never.
    #[arg(long, value_parser = flag_values::timestamp)]
    pub expire_time: Option<prost_types::Timestamp>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's tokens.
    #[arg(long, default_value = "")]
    pub tenant: String,
    #[command(flatten)]
    pub paging: Paging,
}

pub fn create_request(args: &CreateArgs) -> CreateTokenRequest {
    CreateTokenRequest {
        token: Some(Token {
            display_name: args.name.clone(),
            role: args.role.role() as i32,
            tenant_id: args.tenant.clone().unwrap_or_default(),
            expire_time: args.expire_time,
            ..Token::default()
        }),
    }
}

pub async fn run(command: TokenCommand, client: &Client) -> anyhow::Result<Printout> {
    let mut tokens = client.tokens();
    Ok(match command {
        TokenCommand::Create(args) => {
            let made = tokens
                .create_token(create_request(&args))
                .await?
                .into_inner();
            Printout::Resource(proto_json::to_value(&made)?)
        }
        TokenCommand::List(args) => {
            let (items, next) = paging::collect(&args.paging, async |page_token| {
                let r = tokens
                    .list_tokens(ListTokensRequest {
                        tenant_id: args.tenant.clone(),
                        page_size: args.paging.page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.tokens, r.next_page_token))
            })
            .await?;
            let table = table(&items);
            let response = ListTokensResponse {
                tokens: items,
                next_page_token: next.clone(),
            };
            Printout::List {
                json: proto_json::to_value(&response)?,
                table,
                next_page_token: next,
            }
        }
        TokenCommand::Revoke { id } => {
            tokens
                .revoke_token(RevokeTokenRequest { id: id.clone() })
                .await?;
            Printout::Revoked(id)
        }
    })
}

fn table(tokens: &[Token]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "ROLE", "TENANT", "LAST USED", "EXPIRES"]);
    for t in tokens {
        let role = Role::try_from(t.role).map_or("?", |r| r.as_str_name());
        table.row(vec![
            t.id.clone(),
            t.display_name.clone(),
            role.to_owned(),
            t.tenant_id.clone(),
            t.last_used_time.map(|t| t.to_string()).unwrap_or_default(),
            t.expire_time.map(|t| t.to_string()).unwrap_or_default(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: TokenCommand,
    }

    fn parse(args: &[&str]) -> Result<TokenCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("token").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn a_publisher_token_needs_its_tenant() {
        assert!(parse(&["create", "--name", "crm", "--role", "publisher"]).is_err());
        let TokenCommand::Create(args) = parse(&[
            "create",
            "--name",
            "crm",
            "--role",
            "publisher",
            "--tenant",
            "tnt_1",
        ])
        .unwrap() else {
            panic!("expected create");
        };
        let token = create_request(&args).token.unwrap();
        assert_eq!(token.role, Role::Publisher as i32);
        assert_eq!(token.tenant_id, "tnt_1");
    }

    #[test]
    fn an_operator_token_needs_no_tenant() {
        let TokenCommand::Create(args) =
            parse(&["create", "--name", "ops", "--role", "operator"]).unwrap()
        else {
            panic!("expected create");
        };
        let token = create_request(&args).token.unwrap();
        assert_eq!(token.role, Role::Operator as i32);
        assert!(token.tenant_id.is_empty());
    }

    #[test]
    fn the_table_names_roles() {
        let t = Token {
            id: "tok_1".into(),
            role: Role::TenantAdmin as i32,
            tenant_id: "tnt_1".into(),
            ..Token::default()
        };
        let text = table(&[t]).render();
        assert!(
            text.lines().nth(1).unwrap().contains("ROLE_TENANT_ADMIN"),
            "{text}"
        );
    }
}
