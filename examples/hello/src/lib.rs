//! The smallest weft function: answers `GREETING, NAME!` for `/hello/{name}`.
//!
//! It is a plain `wasi:http/proxy` component: it also runs unchanged under
//! `wasmtime serve`. weft passes each route parameter as a `weft-param-NAME`
//! request header, and `[function.hello] env` as environment variables.

use std::io::Write;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

wasip2::http::proxy::export!(Hello);

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let name = request
            .headers()
            .get("weft-param-name")
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| "world".to_string());
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
        let body = format!("{greeting}, {name}!\n");

        let headers = Fields::new();
        let _ = headers.append("content-type", b"text/plain; charset=utf-8");
        let response = OutgoingResponse::new(headers);
        let outgoing = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        let mut stream = outgoing.write().expect("the body is writable once");
        stream.write_all(body.as_bytes()).expect("write the body");
        stream.flush().expect("flush the body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("finish the body");
    }
}
