//! The HTTP side: one [`Client`] per PACS endpoint, with its credentials,
//! TLS roots, time-outs, retries and answer limits. Every answer is checked
//! before it is believed: its status, its media type, its size and its JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::Value as Json;
use tokio::sync::Semaphore;

use crate::DicomWebError;

/// How Clew authenticates to the PACS (or the gateway in front of it).
#[derive(Clone)]
pub enum Credentials {
    None,
    /// `Authorization: Bearer …`.
    Bearer(String),
    /// HTTP basic authentication (RFC 7617).
    Basic {
        user: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    // Never printed, whatever prints the endpoint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Bearer(_) => "Bearer(…)",
            Credentials::Basic { .. } => "Basic(…)",
        })
    }
}

/// One DICOMweb service and how to talk to it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The service's base URL, e.g. `https://pacs.example/dicom-web`
    /// (no credentials, no query).
    pub base_url: String,
    /// The name this endpoint is known by (recorded in the manifest).
    pub name: String,
    pub credentials: Credentials,
    /// PEM bundle of the CAs the PACS's TLS certificate is checked against
    /// (besides the system's).
    pub ca_pem: Option<Vec<u8>>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Longest one request may take, answer included.
    pub timeout: Duration,
    /// Further attempts after a failure that may pass (network, time-out, 5xx, 429).
    pub retries: u32,
    /// Largest search or metadata answer accepted.
    pub max_metadata_bytes: u64,
    /// Largest instance (Part 10 file) accepted.
    pub max_instance_bytes: u64,
}

impl Endpoint {
    /// An endpoint with the defaults (4 requests at once, 60 s time-out,
    /// 4 retries, 256 MiB metadata, 1 GiB instances); `base_url` is
    /// checked: http or https, no credentials, no query or fragment.
    pub fn new(base_url: &str, name: Option<&str>) -> Result<Self, DicomWebError> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| DicomWebError::Config(format!("{base_url:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DicomWebError::Config(format!(
                "{base_url:?}: a DICOMweb base URL is http:// or https://"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DicomWebError::Config(
                "the base URL carries credentials: give them with --pacs-basic-auth-file or --pacs-token-file, never in a URL".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(DicomWebError::Config(format!(
                "{base_url:?}: the base URL takes no query or fragment (select studies with --study-date, --modality, --study-uid, --query)"
            )));
        }
        let host = url.host_str().unwrap_or_default().to_string();
        Ok(Endpoint {
            base_url: url.as_str().trim_end_matches('/').to_string(),
            name: name.map(str::to_string).unwrap_or(host),
            credentials: Credentials::None,
            ca_pem: None,
            concurrency: 4,
            timeout: Duration::from_secs(60),
            retries: 4,
            max_metadata_bytes: 256 << 20,
            max_instance_bytes: 1 << 30,
        })
    }
}

/// Counters of one client's traffic.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub bytes: AtomicU64,
}

/// What went wrong with one attempt, and whether another may pass.
enum Attempt {
    Transient(String),
    Final(DicomWebError),
}

/// A DICOMweb client for one endpoint.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Arc<Endpoint>,
    permits: Arc<Semaphore>,
    traffic: Arc<Traffic>,
}

/// A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters. Checked
/// before any UID a server sent is put into a request path.
pub fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Result<Self, DicomWebError> {
        let mut builder = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.timeout.min(Duration::from_secs(10)))
            // A redirect is answered as an error (see `send`), never followed:
            // it could take the credentials, or the scan, somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("clew/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &endpoint.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| DicomWebError::Config(format!("the PACS CA file: {e}")))?;
            if certs.is_empty() {
                return Err(DicomWebError::Config(
                    "the PACS CA file holds no PEM certificate".into(),
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| DicomWebError::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            permits: Arc::new(Semaphore::new(endpoint.concurrency.max(1))),
            endpoint: Arc::new(endpoint),
            traffic: Arc::default(),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// `{base}/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.endpoint.base_url)
    }

    /// GET `path` with `query`, retried with back-off while the failure may
    /// pass; the answer's media type must be one of `accept`'s and its body
    /// at most `limit` bytes. Returns the body (empty for 204) and its media type.
    async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        accept: &str,
        media: &[&str],
        limit: u64,
    ) -> Result<(Bytes, String), DicomWebError> {
        let url = self.url(path);
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = {
                let _permit =
                    self.permits
                        .acquire()
                        .await
                        .map_err(|_| DicomWebError::Unreachable {
                            url: url.clone(),
                            attempts: attempt,
                            detail: "the client was shut down".into(),
                        })?;
                self.traffic.requests.fetch_add(1, Ordering::Relaxed);
                self.attempt(&url, query, accept, media, limit).await
            };
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Transient(detail)) if attempt > self.endpoint.retries => {
                    return Err(DicomWebError::Unreachable {
                        url,
                        attempts: attempt,
                        detail,
                    })
                }
                Err(Attempt::Transient(detail)) => {
                    self.traffic.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        pacs = %self.endpoint.name,
                        %url,
                        attempt,
                        "{detail}; retrying in {} ms",
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &str,
        query: &[(String, String)],
        accept: &str,
        media: &[&str],
        limit: u64,
    ) -> Result<(Bytes, String), Attempt> {
        let mut req = self.http.get(url).query(query).header(
            ACCEPT,
            HeaderValue::from_str(accept).unwrap_or(HeaderValue::from_static("*/*")),
        );
        req = match &self.endpoint.credentials {
            Credentials::None => req,
            Credentials::Bearer(t) => req.bearer_auth(t),
            Credentials::Basic { user, password } => req.basic_auth(user, Some(password)),
        };
        let mut resp = req
            .send()
            .await
            .map_err(|e| Attempt::Transient(format!("no answer: {}", chain(&e))))?;
        let status = resp.status();
        let hostile = |problem: String| {
            Attempt::Final(DicomWebError::Hostile {
                url: url.to_string(),
                problem,
            })
        };
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere")
                .to_string();
            return Err(hostile(format!(
                "answered {status} redirecting to {to:?}; Clew follows no redirects from a PACS (give the final address as the base URL)"
            )));
        }
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            return Err(Attempt::Transient(format!("answered {status}")));
        }
        if status == StatusCode::NO_CONTENT {
            return Ok((Bytes::new(), String::new()));
        }
        if !status.is_success() {
            let text = read_limited(&mut resp, 4096).await.unwrap_or_default();
            let hint = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    " (check --pacs-basic-auth-file / --pacs-token-file)"
                }
                _ => "",
            };
            return Err(Attempt::Final(DicomWebError::Refused {
                url: url.to_string(),
                status: status.as_u16(),
                detail: format!(
                    "{}{hint}",
                    String::from_utf8_lossy(&text)
                        .trim()
                        .chars()
                        .take(300)
                        .collect::<String>()
                ),
            }));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let essence = content_type
            .parse::<mime::Mime>()
            .map(|m| m.essence_str().to_ascii_lowercase())
            .unwrap_or_default();
        if !media.iter().any(|m| *m == essence) {
            return Err(hostile(format!(
                "answered with media type {content_type:?}, not {}",
                media.join(" or ")
            )));
        }
        if let Some(n) = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if n > limit {
                return Err(hostile(format!(
                    "announces a {n}-byte answer, more than the {limit} bytes accepted"
                )));
            }
        }
        let body = match read_limited(&mut resp, limit).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return Err(hostile(format!(
                    "sent more than the {limit} bytes accepted; the answer was abandoned"
                )))
            }
            Err(ReadError::Broken(detail)) => {
                return Err(Attempt::Transient(format!(
                    "the answer broke off: {detail}"
                )))
            }
        };
        self.traffic
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok((body, content_type))
    }

    /// A JSON answer (QIDO-RS search or WADO-RS metadata): a JSON array of
    /// DICOM JSON objects (PS3.18 F.2); 204 No Content is an empty array.
    pub async fn get_json_array(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Vec<Json>, DicomWebError> {
        // PS3.18 8.7.3.3: application/dicom+json (application/json is
        // answered by some servers and accepted).
        let (body, _) = self
            .get(
                path,
                query,
                "application/dicom+json, application/json;q=0.9",
                &["application/dicom+json", "application/json"],
                self.endpoint.max_metadata_bytes,
            )
            .await?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let value: Json = serde_json::from_slice(&body).map_err(|e| DicomWebError::Hostile {
            url: self.url(path),
            problem: format!("the answer is not complete, valid JSON: {e}"),
        })?;
        match value {
            Json::Array(items) => Ok(items),
            _ => Err(DicomWebError::Hostile {
                url: self.url(path),
                problem: "the answer is not a JSON array of data sets (PS3.18 F.2)".into(),
            }),
        }
    }

    /// One instance as a Part 10 file (WADO-RS, PS3.18 10.4.1.1.1), in its
    /// stored transfer syntax: `multipart/related; type="application/dicom"`
    /// with exactly one part.
    pub async fn get_instance(
        &self,
        study: &str,
        series: &str,
        sop: &str,
    ) -> Result<Bytes, DicomWebError> {
        let path = format!("studies/{study}/series/{series}/instances/{sop}");
        let (body, content_type) = self
            .get(
                &path,
                &[],
                // PS3.18 8.7.3.5.2: transfer-syntax=* asks for the stored one.
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
                &["multipart/related"],
                self.endpoint.max_instance_bytes,
            )
            .await?;
        let url = self.url(&path);
        single_part(body, &content_type)
            .await
            .map_err(|problem| DicomWebError::Hostile { url, problem })
    }
}

/// The one `application/dicom` part of a multipart/related answer.
async fn single_part(body: Bytes, content_type: &str) -> Result<Bytes, String> {
    let m: mime::Mime = content_type
        .parse()
        .map_err(|e| format!("media type {content_type:?}: {e}"))?;
    let boundary = m
        .get_param(mime::BOUNDARY)
        .ok_or_else(|| format!("{content_type:?} names no boundary"))?
        .as_str()
        .to_string();
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let part = parts
        .next_field()
        .await
        .map_err(|e| format!("the multipart answer is malformed: {e}"))?
        .ok_or("the multipart answer holds no part")?;
    let part_type = part
        .content_type()
        .map(|m| m.essence_str().to_ascii_lowercase())
        .unwrap_or_default();
    if part_type != "application/dicom" {
        return Err(format!("its part is {part_type:?}, not application/dicom"));
    }
    let announced = part
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    let bytes = part
        .bytes()
        .await
        .map_err(|e| format!("the multipart answer is malformed: {e}"))?;
    match announced {
        Some(Ok(n)) if n != bytes.len() as u64 => {
            return Err(format!(
                "its part says Content-Length {n} but holds {} bytes",
                bytes.len()
            ))
        }
        Some(Err(_)) => return Err("its part's Content-Length is not a number".into()),
        _ => {}
    }
    if parts
        .next_field()
        .await
        .map_err(|e| format!("the multipart answer is malformed: {e}"))?
        .is_some()
    {
        return Err("it holds more than the one instance asked for".into());
    }
    Ok(bytes)
}

enum ReadError {
    TooLarge,
    Broken(String),
}

async fn read_limited(resp: &mut reqwest::Response, limit: u64) -> Result<Bytes, ReadError> {
    let mut body = bytes::BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(ReadError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(ReadError::Broken(format!(
                    "after {} bytes: {}",
                    body.len(),
                    chain(&e)
                )))
            }
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_checked_before_they_go_into_a_path() {
        assert!(is_uid("1.2.840.10008.5.1.4.1.1.2"));
        for bad in [
            "",
            "../../admin",
            "1..2",
            ".1",
            "1.2.",
            "1.2/3",
            &"1".repeat(65),
        ] {
            assert!(!is_uid(bad), "{bad}");
        }
    }

    #[test]
    fn base_urls_carry_no_credentials_or_query() {
        assert!(Endpoint::new("https://pacs.example/dicom-web/", None).is_ok());
        let e = Endpoint::new("https://u:p@pacs.example/dicom-web", None).unwrap_err();
        assert!(e.to_string().contains("never in a URL"), "{e}");
        assert!(Endpoint::new("https://pacs.example/dicom-web?token=x", None).is_err());
        assert!(Endpoint::new("ftp://pacs.example", None).is_err());
        let ep = Endpoint::new("https://pacs.example/dicom-web/", None).unwrap();
        assert_eq!(ep.base_url, "https://pacs.example/dicom-web");
        assert_eq!(ep.name, "pacs.example");
        assert_eq!(
            format!("{:?}", Credentials::Bearer("secret".into())),
            "Bearer(…)"
        );
    }

    #[tokio::test]
    async fn a_multipart_answer_must_hold_one_honest_dicom_part() {
        let ct = "multipart/related; type=\"application/dicom\"; boundary=XYZ";
        let body = |part_headers: &str, data: &str, extra: &str| {
            Bytes::from(format!(
                "--XYZ\r\n{part_headers}\r\n\r\n{data}\r\n{extra}--XYZ--\r\n"
            ))
        };
        let good = single_part(body("Content-Type: application/dicom", "DICM", ""), ct).await;
        assert_eq!(good.unwrap(), Bytes::from("DICM"));
        let lying = single_part(
            body(
                "Content-Type: application/dicom\r\nContent-Length: 900",
                "DICM",
                "",
            ),
            ct,
        )
        .await
        .unwrap_err();
        assert!(
            lying.contains("Content-Length 900 but holds 4 bytes"),
            "{lying}"
        );
        let html = single_part(body("Content-Type: text/html", "<p>", ""), ct)
            .await
            .unwrap_err();
        assert!(html.contains("not application/dicom"), "{html}");
        let two = single_part(
            body(
                "Content-Type: application/dicom",
                "A",
                "--XYZ\r\nContent-Type: application/dicom\r\n\r\nB\r\n",
            ),
            ct,
        )
        .await
        .unwrap_err();
        assert!(two.contains("more than the one"), "{two}");
        assert!(single_part(Bytes::from("junk"), "multipart/related")
            .await
            .unwrap_err()
            .contains("no boundary"));
    }
}
