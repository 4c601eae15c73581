use eventpipe_testkit::Moto;

#[tokio::test]
async fn moto_serves_sqs_and_dynamodb_and_stops_when_dropped() {
    let moto = Moto::start();
    let sqs = moto.sqs();
    let url = sqs
        .create_queue()
        .queue_name("hello")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.send_message()
        .queue_url(&url)
        .message_body("hi")
        .send()
        .await
        .unwrap();
    let got = sqs.receive_message().queue_url(&url).send().await.unwrap();
    assert_eq!(got.messages()[0].body(), Some("hi"));
    let tables = moto.dynamodb().list_tables().send().await.unwrap();
    assert!(tables.table_names().is_empty());

    let endpoint = moto.endpoint();
    drop(moto);
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "moto still listening after drop"
    );
}

#[tokio::test]
async fn two_servers_are_independent() {
    let (a, b) = (Moto::start(), Moto::start());
    a.sqs()
        .create_queue()
        .queue_name("only-in-a")
        .send()
        .await
        .unwrap();
    let in_b = b.sqs().list_queues().send().await.unwrap();
    assert!(in_b.queue_urls().is_empty());
}
