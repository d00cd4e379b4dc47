//! Hand-written JSON output for hot paths (a 999-user page is written straight into one buffer),
//! and the Graph and token-endpoint error bodies every handler shares.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Appends `value` as a JSON string. serde_json's escaper is used because dependencies are built
/// optimised even in debug builds, and string escaping dominates page rendering.
pub(crate) fn push_str(buf: &mut Vec<u8>, value: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, value);
}

/// A JSON object being written: keys are added in order, separators are handled here.
pub(crate) struct ObjectWriter<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> ObjectWriter<'a> {
        buf.push(b'{');
        ObjectWriter { buf, first: true }
    }

    /// Writes the key and returns the buffer for its value.
    pub(crate) fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        push_str(self.buf, key);
        self.buf.push(b':');
        self.buf
    }

    pub(crate) fn string(&mut self, key: &str, value: &str) {
        let buf = self.key(key);
        push_str(buf, value);
    }

    pub(crate) fn raw(&mut self, key: &str, value: &str) {
        self.key(key).extend_from_slice(value.as_bytes());
    }

    /// A point to go back to if the next key turns out to have nothing to write.
    pub(crate) fn checkpoint(&self) -> (usize, bool) {
        (self.buf.len(), self.first)
    }

    pub(crate) fn rollback(&mut self, (len, first): (usize, bool)) {
        self.buf.truncate(len);
        self.first = first;
    }

    pub(crate) fn finish(self) {
        self.buf.push(b'}');
    }
}

/// A response with a JSON body already rendered.
pub(crate) fn response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A Graph error `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`
/// in the directory form of the samples.
pub(crate) fn graph_error(
    status: StatusCode,
    code: &str,
    message: &str,
    now: i64,
    request_id: &str,
) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": crate::clock::iso(now).trim_end_matches('Z'),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }
    });
    response(status, body.to_string().into_bytes())
}
