//! The harness: an emulator on 127.0.0.1:0 with a token, and helpers for Graph and control calls.

use graph_emulator::{EmulatorOptions, RunningEmulator};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub(crate) struct Emulator {
    pub(crate) emulator: RunningEmulator,
    pub(crate) http: reqwest::Client,
    pub(crate) token: String,
}

/// One HTTP answer, read whole.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) text: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    }
}

/// One delta round followed to its deltaLink.
pub(crate) struct Round {
    pub(crate) pages: Vec<Value>,
    pub(crate) items: Vec<Value>,
    pub(crate) delta_link: String,
}

impl Emulator {
    pub(crate) async fn start(options: EmulatorOptions) -> Emulator {
        let emulator = graph_emulator::start(options, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let mut started = Emulator {
            emulator,
            http,
            token: String::new(),
        };
        started.token = started.fetch_token().await;
        started
    }

    pub(crate) async fn small(users: usize, groups: usize) -> Emulator {
        Emulator::start(EmulatorOptions {
            users,
            groups,
            ..EmulatorOptions::default()
        })
        .await
    }

    pub(crate) fn url(&self) -> String {
        self.emulator.url()
    }

    pub(crate) fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.url(),
            EmulatorOptions::default().tenant_id
        )
    }

    pub(crate) async fn fetch_token(&self) -> String {
        let defaults = EmulatorOptions::default();
        let answer = self
            .post_form(
                &self.token_url(),
                &[
                    ("client_id", defaults.client_id.as_str()),
                    ("client_secret", defaults.client_secret.as_str()),
                    ("scope", "https://graph.microsoft.com/.default"),
                    ("grant_type", "client_credentials"),
                ],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()["access_token"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Answer {
        read(self.http.post(url).form(form).send().await.unwrap()).await
    }

    /// A Graph GET of a path under `/v1.0/` or of an absolute link, with extra headers.
    pub(crate) async fn get_with(&self, path_or_url: &str, headers: &[(&str, &str)]) -> Answer {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}/v1.0/{path_or_url}", self.url())
        };
        let mut request = self.http.get(url).bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.unwrap()).await
    }

    pub(crate) async fn get(&self, path_or_url: &str) -> Answer {
        self.get_with(path_or_url, &[]).await
    }

    /// A Graph GET that must succeed, as JSON.
    pub(crate) async fn get_ok(&self, path_or_url: &str) -> Value {
        let answer = self.get(path_or_url).await;
        assert_eq!(answer.status, StatusCode::OK, "{path_or_url}: {}", answer.text);
        answer.json()
    }

    /// A control API call that must succeed; `Null` for an empty answer.
    pub(crate) async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/_emulator/{path}", self.url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = read(request.send().await.unwrap()).await;
        assert!(
            answer.status.is_success(),
            "{method} {path}: {} {}",
            answer.status,
            answer.text
        );
        if answer.text.is_empty() {
            Value::Null
        } else {
            answer.json()
        }
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        self.control(Method::POST, path, Some(body)).await
    }

    /// Follows nextLinks from `start` until a deltaLink, checking no page has both.
    pub(crate) async fn round_with(&self, start: &str, headers: &[(&str, &str)]) -> Round {
        let mut pages = Vec::new();
        let mut items = Vec::new();
        let mut link = start.to_owned();
        loop {
            let page = {
                let answer = self.get_with(&link, headers).await;
                assert_eq!(answer.status, StatusCode::OK, "{link}: {}", answer.text);
                answer.json()
            };
            items.extend(page["value"].as_array().unwrap().iter().cloned());
            let next = page["@odata.nextLink"].as_str().map(str::to_owned);
            let delta = page["@odata.deltaLink"].as_str().map(str::to_owned);
            pages.push(page);
            match (next, delta) {
                (Some(next), None) => link = next,
                (None, Some(delta_link)) => {
                    return Round {
                        pages,
                        items,
                        delta_link,
                    };
                }
                other => panic!("a delta page has exactly one link: {other:?}"),
            }
        }
    }

    pub(crate) async fn round(&self, start: &str) -> Round {
        self.round_with(start, &[]).await
    }
}

pub(crate) async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Answer {
        status,
        headers,
        text,
    }
}

/// The item of `items` with this id.
pub(crate) fn by_id<'a>(items: &'a [Value], id: &str) -> Option<&'a Value> {
    items.iter().find(|item| item["id"] == id)
}

/// The ids of `items`, sorted.
pub(crate) fn ids(items: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}
