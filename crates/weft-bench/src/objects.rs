//! Object buckets: PUT and GET throughput of 1 MiB and 64 MiB objects over
//! the S3 listener (signed requests, one at a time), against the disk's
//! own sequential write with fsync and its read, measured with `dd` on
//! the same file system in the same run.
//!
//! Reads are measured twice on both sides: from the disk (every file
//! evicted from the page cache first, with `dd`'s `nocache`), which is the
//! disk's sequential bandwidth the bar is set against, and again from the
//! page cache, where `dd` reads at memory speed and weft's bytes still
//! cross a loopback socket.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::procs::Server;

/// Objects of each size, and how many are written and read per round.
const SIZES: [(&str, usize, usize); 2] = [("1 MiB", 1 << 20, 64), ("64 MiB", 64 << 20, 4)];
const ROUNDS: usize = 3;
/// A multipart upload's part size and how many parts go at once (the AWS
/// CLI's defaults are 8 MiB and 10).
const PART: usize = 8 << 20;
const PARTS_AT_ONCE: usize = 4;

/// A signed request on a fresh connection: its status and body length.
async fn s3(
    addr: SocketAddr,
    keys: &(String, String),
    method: http::Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(u16, u64)> {
    let (status, _, read) = signed(addr, keys, method, path, body, false).await?;
    Ok((status, read.len()))
}

/// A signed request on a fresh connection: its status, headers, and body
/// (its bytes kept only when `keep`).
async fn signed(
    addr: SocketAddr,
    keys: &(String, String),
    method: http::Method,
    path: &str,
    body: Bytes,
    keep: bool,
) -> anyhow::Result<(u16, http::HeaderMap, Counted)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let uri: http::Uri = format!("http://{addr}{path}").parse()?;
    let mut request = hyper::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))?;
    let secret = weft_s3::sigv4::Secret(keys.1.clone());
    weft_s3::sigv4::sign(
        &method,
        &uri,
        request.headers_mut(),
        &keys.0,
        &secret,
        "us-east-1",
        jiff::Timestamp::now(),
    );
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut read = Counted::default();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            read.count += data.len() as u64;
            if keep {
                read.kept.extend_from_slice(&data);
            }
        }
    }
    Ok((status, headers, read))
}

/// A response body's length, and its bytes when they were kept.
#[derive(Default)]
struct Counted {
    count: u64,
    kept: Vec<u8>,
}

impl Counted {
    fn len(&self) -> u64 {
        self.count
    }
}

/// Uploads `body` to `path` as S3's SDKs upload large objects: a
/// multipart upload of `part`-byte parts, `at_once` of them at a time.
async fn multipart(
    addr: SocketAddr,
    keys: &(String, String),
    path: &str,
    body: &Bytes,
    part: usize,
    at_once: usize,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let (status, _, created) = signed(
        addr,
        keys,
        http::Method::POST,
        &format!("{path}?uploads"),
        Bytes::new(),
        true,
    )
    .await?;
    anyhow::ensure!(status == 200, "CreateMultipartUpload of {path} answered {status}");
    let created = String::from_utf8_lossy(&created.kept).into_owned();
    let id = created
        .split("<UploadId>")
        .nth(1)
        .and_then(|rest| rest.split("</UploadId>").next())
        .context("CreateMultipartUpload answered no UploadId")?
        .to_string();
    let parts: Vec<(usize, Bytes)> = (0..body.len().div_ceil(part))
        .map(|i| (i + 1, body.slice(i * part..((i + 1) * part).min(body.len()))))
        .collect();
    let id = &id;
    let mut uploaded: Vec<(usize, String)> = futures_util::stream::iter(parts)
        .map(|(n, data)| async move {
            let (status, headers, _) = signed(
                addr,
                keys,
                http::Method::PUT,
                &format!("{path}?partNumber={n}&uploadId={id}"),
                data,
                false,
            )
            .await?;
            anyhow::ensure!(status == 200, "UploadPart {n} of {path} answered {status}");
            let etag = headers
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .context("UploadPart answered no ETag")?
                .to_string();
            Ok((n, etag))
        })
        .buffer_unordered(at_once)
        .collect::<Vec<anyhow::Result<(usize, String)>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    uploaded.sort();
    let mut document = String::from("<CompleteMultipartUpload>");
    for (n, etag) in &uploaded {
        document.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"));
    }
    document.push_str("</CompleteMultipartUpload>");
    let (status, _, _) = signed(
        addr,
        keys,
        http::Method::POST,
        &format!("{path}?uploadId={id}"),
        Bytes::from(document),
        false,
    )
    .await?;
    anyhow::ensure!(status == 200, "CompleteMultipartUpload of {path} answered {status}");
    Ok(())
}

/// Drops `file` from the page cache (`dd`'s `nocache` advises the kernel
/// to forget its pages), so the next read comes from the disk.
fn evict(file: &Path) -> anyhow::Result<()> {
    let out = Command::new("dd")
        .args([
            format!("if={}", file.display()),
            "iflag=nocache".into(),
            "count=0".into(),
        ])
        .output()
        .context("running dd")?;
    if !out.status.success() {
        bail!(
            "dd failed to evict {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Evicts every file under `dir` from the page cache.
fn evict_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            evict_tree(&entry.path())?;
        } else if kind.is_file() {
            evict(&entry.path())?;
        }
    }
    Ok(())
}

/// What `dd` does with `count` files of `size` bytes, in MB/s.
struct Disk {
    /// Sequential write, each file fsynced.
    write: f64,
    /// Sequential read, after the files were evicted from the page cache.
    read: f64,
    /// Sequential read again, from the page cache.
    cached: f64,
}

/// `dd` writing `count` files of `size` bytes, each fsynced, then reading
/// them back from the disk and again from the page cache.
fn dd(dir: &Path, size: usize, count: usize) -> anyhow::Result<Disk> {
    let block = size.min(1 << 20);
    let blocks = size / block;
    let run = |args: &[String]| -> anyhow::Result<()> {
        let out = Command::new("dd").args(args).output().context("running dd")?;
        if !out.status.success() {
            bail!("dd failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let file = |i: usize| dir.join(format!("dd-{i}"));
    let mb_s = |started: Instant| (size * count) as f64 / started.elapsed().as_secs_f64() / 1e6;
    let started = Instant::now();
    for i in 0..count {
        run(&[
            "if=/dev/zero".into(),
            format!("of={}", file(i).display()),
            format!("bs={block}"),
            format!("count={blocks}"),
            "conv=fsync".into(),
        ])?;
    }
    let write = mb_s(started);
    let read_all = || -> anyhow::Result<f64> {
        let started = Instant::now();
        for i in 0..count {
            run(&[
                format!("if={}", file(i).display()),
                "of=/dev/null".into(),
                format!("bs={block}"),
            ])?;
        }
        Ok(mb_s(started))
    };
    for i in 0..count {
        evict(&file(i))?;
    }
    let read = read_all()?;
    let cached = read_all()?;
    for i in 0..count {
        let _ = std::fs::remove_file(file(i));
    }
    Ok(Disk { write, read, cached })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn report(weft: &Path, dir: &Path) -> anyhow::Result<String> {
    let app = dir.join("objects-app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(
        app.join("weft.toml"),
        "[app]\nname = \"objects-bench\"\n\n[bucket.bench]\n",
    )?;
    let data = dir.join("objects-data");
    let server = Server::weft_with(weft, &app, &data, &["--s3-listen", "127.0.0.1:0"])?;
    let s3_addr: SocketAddr = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("S3 API on http://"))
        .and_then(|rest| rest.split(' ').next())
        .context("weft printed no S3 address")?
        .parse()?;
    let admin = server.admin.context("weft printed no admin address")?;
    let credentials = crate::procs::get_json(admin, "/v1/s3/credentials").await?;
    let keys = (
        credentials["access_key_id"].as_str().unwrap_or_default().to_string(),
        credentials["secret_access_key"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let dd_dir = dir.join("dd");
    std::fs::create_dir_all(&dd_dir)?;

    let mut out = format!(
        "Objects written and read one at a time over the S3 listener (Signature Version 4, MD5 of every byte), against `dd` on the same file system: sequential writes with `conv=fsync`, then reads of files evicted from the page cache (from the disk), then reads again (from the page cache). weft's files are evicted the same way before its reads from the disk. {ROUNDS} rounds, the median of each.\n\n| size | weft PUT MB/s | dd write MB/s | PUT ÷ dd | weft GET, disk | dd read, disk | GET ÷ dd | weft GET, cached | dd read, cached | cached ÷ dd |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for (label, size, count) in SIZES {
        let body = Bytes::from((0..size).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());
        let (mut puts, mut gets, mut cached_gets) = (Vec::new(), Vec::new(), Vec::new());
        let (mut writes, mut reads, mut cached_reads) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let path = |i: usize| format!("/bench/{label}-{round}-{i}").replace(' ', "");
            let started = Instant::now();
            for i in 0..count {
                let (status, _) = s3(s3_addr, &keys, http::Method::PUT, &path(i), body.clone()).await?;
                anyhow::ensure!(status == 200, "PUT {} answered {status}", path(i));
            }
            puts.push((size * count) as f64 / started.elapsed().as_secs_f64() / 1e6);
            evict_tree(&data)?;
            for rate in [&mut gets, &mut cached_gets] {
                let started = Instant::now();
                for i in 0..count {
                    let (status, read) = s3(s3_addr, &keys, http::Method::GET, &path(i), Bytes::new()).await?;
                    anyhow::ensure!(
                        status == 200 && read == size as u64,
                        "GET {} answered {status}, {read} bytes",
                        path(i)
                    );
                }
                rate.push((size * count) as f64 / started.elapsed().as_secs_f64() / 1e6);
            }
            let disk = dd(&dd_dir, size, count)?;
            writes.push(disk.write);
            reads.push(disk.read);
            cached_reads.push(disk.cached);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (put, get, cached_get) = (median(puts), median(gets), median(cached_gets));
        let (write, read, cached_read) = (median(writes), median(reads), median(cached_reads));
        out.push_str(&format!(
            "| {label} | {put:.0} | {write:.0} | {:.2} | {get:.0} | {read:.0} | {:.2} | {cached_get:.0} | {cached_read:.0} | {:.2} |\n",
            put / write,
            get / read,
            cached_get / cached_read
        ));
    }
    // Large objects as the SDKs and the AWS CLI send them: in parts, several
    // at once, each part's MD5 computed beside the others'.
    let (size, count) = (64 << 20, 4);
    let body = Bytes::from((0..size).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());
    let (mut puts, mut writes) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let started = Instant::now();
        for i in 0..count {
            multipart(
                s3_addr,
                &keys,
                &format!("/bench/multipart-{round}-{i}"),
                &body,
                PART,
                PARTS_AT_ONCE,
            )
            .await?;
        }
        puts.push((size * count) as f64 / started.elapsed().as_secs_f64() / 1e6);
        writes.push(dd(&dd_dir, size, count)?.write);
    }
    let (put, write) = (median(puts), median(writes));
    out.push_str(&format!(
        "\nThe same 64 MiB objects as a multipart upload, as the SDKs and the AWS CLI send objects this large ({} MiB parts, {PARTS_AT_ONCE} at a time):\n\n| size | weft PUT MB/s | dd write MB/s | PUT ÷ dd |\n| --- | ---: | ---: | ---: |\n| 64 MiB, multipart | {put:.0} | {write:.0} | {:.2} |\n",
        PART >> 20,
        put / write
    ));
    out.push_str(&format!(
        "\nServer RSS after the runs: {:.0} MiB.\n",
        server.rss_bytes()? as f64 / (1 << 20) as f64
    ));
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    Ok(out)
}
