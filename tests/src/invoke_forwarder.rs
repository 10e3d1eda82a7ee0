//! Lambda's `Invoke` API for functions running as real processes under [`FakeRuntimeApi`]s,
//! in front of the AWS emulator: an asynchronous invocation (`X-Amz-Invocation-Type: Event`)
//! of a routed function queues its payload on that function's Runtime API and answers 202, as
//! Lambda does; every other request goes to moto unchanged. The functions' one AWS endpoint
//! (`PGKEEP_AWS_ENDPOINT`) points here, so the status function's start of a dump reaches the
//! real dump process, and the dump's start of its verification the real verify process.
//!
//! Plain HTTP/1.1 over `std::net`: each request is read whole (a body by `Content-Length` or
//! chunked), sent to moto on a connection of its own (`Connection: close`), and moto's answer
//! relayed byte for byte.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::http1::{read_request, Request};
use crate::lambda_runtime::FakeRuntimeApi;

const INVOKE_PREFIX: &str = "/2015-03-31/functions/";

type Routes = Arc<Mutex<HashMap<String, Arc<FakeRuntimeApi>>>>;

/// See the module documentation; it stops serving when the test process ends.
pub struct InvokeForwarder {
    address: String,
    routes: Routes,
    invoked: Arc<Mutex<Vec<(String, Value)>>>,
}

impl InvokeForwarder {
    /// Listens on 127.0.0.1 and passes what it does not serve to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let routes: Routes = Arc::default();
        let invoked: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let (shared_routes, shared_invoked) = (routes.clone(), invoked.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (routes, invoked, upstream) = (
                    shared_routes.clone(),
                    shared_invoked.clone(),
                    upstream.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve(stream, &routes, &invoked, &upstream);
                });
            }
        });
        Ok(InvokeForwarder {
            address,
            routes,
            invoked,
        })
    }

    /// `http://127.0.0.1:port`: the endpoint to give the functions.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Invocations of the function `name` go to `api`.
    pub fn route(&self, name: &str, api: Arc<FakeRuntimeApi>) {
        self.routes.lock().unwrap().insert(name.to_owned(), api);
    }

    /// Every invocation served so far: function name and payload.
    pub fn invocations(&self) -> Vec<(String, Value)> {
        self.invoked.lock().unwrap().clone()
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-amzn-requestid: forwarded\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// The function an Invoke request names (a name or an ARN, percent-encoded in the path).
fn invoked_function(path: &str) -> Option<String> {
    let rest = path.strip_prefix(INVOKE_PREFIX)?;
    let (name, tail) = rest.split_once('/')?;
    if !tail.starts_with("invocations") {
        return None;
    }
    let name = name.replace("%3A", ":").replace("%3a", ":");
    Some(name.rsplit(':').next().unwrap_or(&name).to_owned())
}

/// Sends `request` to moto on a connection of its own and returns its whole answer.
fn forward(request: &Request, upstream: &str) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(upstream)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    for (name, value) in &request.headers {
        let skip = [
            "connection",
            "content-length",
            "transfer-encoding",
            "expect",
        ];
        if !skip.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        request.body.len()
    ));
    conn.write_all(head.as_bytes())?;
    conn.write_all(&request.body)?;
    conn.flush()?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    Ok(answer)
}

fn serve(
    stream: TcpStream,
    routes: &Routes,
    invoked: &Mutex<Vec<(String, Value)>>,
    upstream: &str,
) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader, &mut writer)? {
        let routed = invoked_function(&request.path)
            .filter(|_| request.method == "POST")
            .and_then(|name| {
                let api = routes.lock().unwrap().get(&name).cloned();
                api.map(|api| (name, api))
            });
        let Some((name, api)) = routed else {
            let answer = forward(&request, upstream)?;
            writer.write_all(&answer)?;
            writer.flush()?;
            // moto closes after each answer: so do we when it said so.
            if String::from_utf8_lossy(&answer[..answer.len().min(4096)])
                .to_ascii_lowercase()
                .contains("connection: close")
            {
                return Ok(());
            }
            continue;
        };
        let asynchronous = request
            .header("x-amz-invocation-type")
            .is_some_and(|t| t == "Event");
        if !asynchronous {
            respond(
                &mut writer,
                "400 Bad Request",
                br#"{"message":"the forwarder serves only InvocationType=Event"}"#,
            )?;
            continue;
        }
        let payload: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        invoked.lock().unwrap().push((name, payload.clone()));
        api.push(payload);
        respond(&mut writer, "202 Accepted", b"")?;
    }
    Ok(())
}
