//! gRPC end to end: a tonic client through the gateway to a tonic upstream that trusts the
//! gateway's plain identity headers. Unary and server-streaming calls, rejections and the
//! gateway's own errors as gRPC statuses, concurrent calls on one HTTP/2 connection.

mod support;

use std::net::SocketAddr;

use tokio::net::TcpListener;

use support::grpc::{DemoClient, DemoServer, pb, with_token};
use support::{ONE_ISSUER, Running, admin_token, closed_port, gateway_dir, token};

/// A plain tonic server as the upstream: it trusts the gateway's plain identity headers
/// (the service only reads what the gateway forwarded, never a token).
async fn tonic_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tower_gatekeeper::TrustedContextLayer::plain_headers())
            .add_service(DemoServer)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

/// A unary call to any `path` (one `DemoClient` does not have); returns its error status.
async fn raw_grpc_call(gateway: SocketAddr, path: &'static str, token: &str) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{gateway}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = with_token(tonic::Request::new(pb::WhoAmIRequest {}), token);
    grpc.unary::<_, pb::WhoAmIReply, _>(
        request,
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("the call fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_the_gateway_to_a_tonic_upstream() {
    use tonic::{Code, Request as GrpcRequest};

    let service = tonic_upstream().await;
    let dir = gateway_dir();
    let toml = format!(
        r#"{ONE_ISSUER}
[[route]]
path = "/gatekeeper.demo.Demo/WhoAmI"
methods = ["POST"]
upstream = "http://{service}"
roles_any = ["clerk", "admin"]

[[route]]
path = "/gatekeeper.demo.Demo/Count"
methods = ["POST"]
upstream = "http://{service}"
roles_any = ["admin"]

[[route]]
path = "/gatekeeper.demo.Down/{{method}}"
upstream = "http://{down}"
"#,
        down = closed_port().await
    );
    let config = gatekeeper::load_config(dir.write_config(&toml)).unwrap_or_else(|e| panic!("{e}"));
    let gw = Running::start(config).await;
    let mut client = DemoClient::connect(gw.addr).await.unwrap();

    // Allowed: the service sees the caller the gateway verified, and never the token; a
    // spoofed x-user-id from the client is replaced.
    let mut req = with_token(
        GrpcRequest::new(pb::WhoAmIRequest {}),
        &token("rs256_valid"),
    );
    req.metadata_mut()
        .insert("x-user-id", "spoofed".parse().unwrap());
    let reply = client.who_am_i(req).await.unwrap();
    assert_eq!(reply.subject, "user-123");
    assert_eq!(reply.roles, ["clerk"]);
    assert_eq!(reply.metadata_user, "user-123");
    assert!(!reply.request_id.is_empty());
    assert!(!reply.saw_authorization);

    // Server streaming, ending with the upstream's grpc-status trailer.
    let admin = admin_token();
    let replies = client
        .count(with_token(
            GrpcRequest::new(pb::CountRequest { upto: 50 }),
            &admin,
        ))
        .await
        .unwrap();
    assert_eq!(replies.len(), 50);
    assert!(replies.iter().all(|r| r.subject == "admin-1"));

    // Rejections answer in gRPC terms, without reaching the service.
    let status = client
        .who_am_i(GrpcRequest::new(pb::WhoAmIRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .who_am_i(with_token(
            GrpcRequest::new(pb::WhoAmIRequest {}),
            &token("expired"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .count(with_token(
            GrpcRequest::new(pb::CountRequest { upto: 1 }),
            &token("rs256_valid"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The gateway's own errors are gRPC statuses too: no route → UNIMPLEMENTED, upstream
    // down → UNAVAILABLE.
    let status = raw_grpc_call(gw.addr, "/gatekeeper.demo.Demo/Nope", &admin).await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status = raw_grpc_call(gw.addr, "/gatekeeper.demo.Down/WhoAmI", &admin).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Concurrent calls on the client's one HTTP/2 connection all reach the service.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = client.clone();
            let token = admin.clone();
            tokio::spawn(async move {
                client
                    .who_am_i(with_token(GrpcRequest::new(pb::WhoAmIRequest {}), &token))
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().subject, "admin-1");
    }
    gw.stop().await;
}
