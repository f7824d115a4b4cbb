//! The paging flags every list command shares, and `--all` walking every page.

use clap::Args;
use tonic::Status;

#[derive(Debug, Clone, Default, Args)]
pub struct Paging {
    /// Results per page; 0 lets the server choose.
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    /// Continue from a previous list's next page token.
    #[arg(long, default_value = "", conflicts_with = "all")]
    pub page_token: String,
    /// Fetch every page.
    #[arg(long)]
    pub all: bool,
}

/// Fetches one page, or with `--all` every page, and returns the items with the token of the
/// page after them (empty when there is none).
pub async fn collect<T>(
    paging: &Paging,
    mut fetch: impl AsyncFnMut(String) -> Result<(Vec<T>, String), Status>,
) -> Result<(Vec<T>, String), Status> {
    let (mut items, mut next) = fetch(paging.page_token.clone()).await?;
    while paging.all && !next.is_empty() {
        let (more, after) = fetch(next.clone()).await?;
        if after == next {
            // A server handing back the token it was given would loop forever.
            return Err(Status::internal("server repeated a page token"));
        }
        items.extend(more);
        next = after;
    }
    Ok((items, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of two numbers out of 0..5, the token being the next start.
    async fn page(token: String) -> Result<(Vec<u32>, String), Status> {
        let start: u32 = if token.is_empty() {
            0
        } else {
            token.parse().unwrap()
        };
        let items: Vec<u32> = (start..(start + 2).min(5)).collect();
        let next = if start + 2 < 5 {
            (start + 2).to_string()
        } else {
            String::new()
        };
        Ok((items, next))
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn without_all_one_page_comes_back_with_its_next_token() {
        let got = block_on(collect(&Paging::default(), async |t| page(t).await)).unwrap();
        assert_eq!(got, (vec![0, 1], "2".to_owned()));
    }

    #[test]
    fn a_page_token_starts_from_that_page() {
        let paging = Paging {
            page_token: "2".into(),
            ..Paging::default()
        };
        let got = block_on(collect(&paging, async |t| page(t).await)).unwrap();
        assert_eq!(got, (vec![2, 3], "4".to_owned()));
    }

    #[test]
    fn all_walks_every_page() {
        let paging = Paging {
            all: true,
            ..Paging::default()
        };
        let got = block_on(collect(&paging, async |t| page(t).await)).unwrap();
        assert_eq!(got, (vec![0, 1, 2, 3, 4], String::new()));
    }

    #[test]
    fn all_stops_when_the_server_repeats_a_token() {
        let paging = Paging {
            all: true,
            ..Paging::default()
        };
        let result: Result<(Vec<u32>, String), Status> =
            block_on(collect(&paging, async |_| Ok((vec![1], "same".to_owned()))));
        assert_eq!(result.unwrap_err().code(), tonic::Code::Internal);
    }
}
