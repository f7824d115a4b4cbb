//! What the ingress port does with clients that are slow, abusive or many, and how a node stops:
//! the real `hookplane data` process, raw TCP connections that send half a request, and real
//! signed LINE requests beside them.

use std::time::Duration;

use hookplane_tests::{ControlProcess, DataNode, Receiver, eventually, fixture, ingress};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(15);
/// How long a test waits for the server to close a stalled connection: a bound on the look, not
/// an assertion about the deadline's precision.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

async fn node_with(control: &ControlProcess, extra: &[&str], channel: &str) -> DataNode {
    let node = DataNode::start(control, extra).await.unwrap();
    ingress::wait_for_channel(&node.ingress_url(), channel)
        .await
        .unwrap();
    node
}

/// A brand's channel signed with the fixture secret, forwarding to each of `urls`.
async fn channel_to(control: &ControlProcess, urls: &[String]) -> String {
    let client = control.admin().await.unwrap();
    hookplane_tests::api::channel_forwarding_to(&client, urls)
        .await
        .unwrap()
        .0
}

/// Reads until the server closes the connection; what it sent before.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(CLOSE_WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept a stalled connection open"),
        }
    }
}

#[tokio::test]
async fn half_sent_headers_and_trickling_bodies_neither_slow_line_down_nor_stay_open() {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let channel = channel_to(&control, &[receiver.url("/crm")]).await;
    let node = node_with(
        &control,
        &[
            "--ingress-header-timeout",
            "2s",
            "--ingress-body-timeout",
            "2s",
        ],
        &channel,
    )
    .await;
    let path = format!("/api/webhook/line/{channel}/events");
    let mut half_headers = Vec::new();
    for _ in 0..500 {
        let mut stream = TcpStream::connect(node.ingress_addr).await.unwrap();
        stream
            .write_all(format!("POST {path} HTTP/1.1\r\nhost: hookplane\r\ncontent-le").as_bytes())
            .await
            .unwrap();
        half_headers.push(stream);
    }
    let mut trickling = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(node.ingress_addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nhost: hookplane\r\ncontent-type: application/json\r\n\
                     x-line-signature: c2lnbmF0dXJl\r\ncontent-length: 1000\r\n\r\n{{"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        trickling.push(stream);
    }
    let tricklers = tokio::spawn(async move {
        // A byte every 200 ms: the body would take 200 s.
        for _ in 0..20 {
            for stream in &mut trickling {
                let _ = stream.write_all(b" ").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        trickling
    });
    // LINE meanwhile: every request answered 200 and forwarded.
    for n in 0..10 {
        let answer = ingress::post_signed(&node.ingress_url(), &channel, &ingress::text_event(n))
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            200,
            "a LINE request among the stalled ones"
        );
    }
    receiver.wait_for(10, WAIT).await.unwrap();
    // The stalled connections are closed by their deadlines: half a header gets nothing (or a
    // 408 hyper writes before closing), a trickling body gets 408.
    for stream in &mut half_headers {
        let answer = until_closed(stream).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 408"),
            "half a header answered {text:?}"
        );
    }
    let mut trickling = tricklers.await.unwrap();
    for stream in &mut trickling {
        let answer = String::from_utf8_lossy(&until_closed(stream).await).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a trickling body answered {answer:?}"
        );
    }
}

#[tokio::test]
async fn a_connection_beyond_the_cap_is_closed_at_once_and_counted() {
    let control = ControlProcess::start().await.unwrap();
    let channel = channel_to(&control, &[]).await;
    let node = node_with(
        &control,
        &[
            "--ingress-max-connections",
            "3",
            "--ingress-header-timeout",
            "30s",
        ],
        &channel,
    )
    .await;
    // wait_for_channel's connections are gone once their client is: the cap is free again.
    let mut held = Vec::new();
    let mut closed_at_once = None;
    for n in 0..10 {
        let mut stream = TcpStream::connect(node.ingress_addr).await.unwrap();
        let mut buf = [0u8; 16];
        // A connection over the cap is closed without a word; one within it waits for a request.
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_at_once = Some(n);
                break;
            }
            _ => held.push(stream),
        }
    }
    assert!(
        closed_at_once.is_some_and(|n| n <= 3),
        "no connection was refused within the first 4 (held {})",
        held.len()
    );
    drop(held);
    // The cap is free again once those are gone: /metrics itself gets through.
    let refused = eventually(WAIT, "the refusal counted", || async {
        node.metric("hookplane_ingress_connections_refused_total")
            .await
            .ok()
            .flatten()
    })
    .await
    .unwrap();
    assert!(refused >= 1);
}

#[tokio::test]
async fn on_sigterm_readyz_turns_503_while_line_requests_still_get_200_until_the_grace_ends() {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let channel = channel_to(&control, &[receiver.url("/crm")]).await;
    let mut node = node_with(&control, &["--drain-grace", "4s"], &channel).await;
    let readyz = format!("{}/readyz", node.ingress_url());
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);

    node.send_sigterm().unwrap();
    eventually(WAIT, "/readyz to answer 503", || async {
        let status = reqwest::get(&readyz).await.ok()?.status();
        (status == 503).then_some(())
    })
    .await
    .unwrap();
    // Draining, not gone: the load balancer's last requests are still taken and delivered.
    let answer = ingress::post_signed(&node.ingress_url(), &channel, &fixture("text.json"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    receiver.wait_for(1, WAIT).await.unwrap();
    let exit = node.wait_exit().await.unwrap();
    assert!(exit.success(), "the node exited with {exit}");
    assert!(
        TcpStream::connect(node.ingress_addr).await.is_err(),
        "the ingress still accepts after the grace"
    );
}
