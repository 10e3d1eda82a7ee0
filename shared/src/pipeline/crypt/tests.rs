use super::*;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn key(byte: u8) -> DataKey {
    zeroize::Zeroizing::new([byte; 32])
}

fn fields(backup_id: &str) -> HeaderFields {
    HeaderFields {
        backup_id: backup_id.into(),
        database: "app".into(),
        compression: "zstd".into(),
        key_id: "arn:aws:kms:eu-west-1:111122223333:key/test".into(),
        wrapped_key: vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff],
    }
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// A writer that takes at most `max` bytes per call and, if `stalls`, returns
/// `Pending` (after waking) on every other call, to exercise partial writes.
struct ChokeWriter {
    data: Vec<u8>,
    max: usize,
    stalls: bool,
    tick: bool,
    fail: bool,
    shut_down: bool,
}

impl ChokeWriter {
    fn new(max: usize, stalls: bool) -> Self {
        ChokeWriter {
            data: Vec::new(),
            max,
            stalls,
            tick: false,
            fail: false,
            shut_down: false,
        }
    }

    fn stall(&mut self, cx: &mut Context<'_>) -> bool {
        self.tick = !self.tick;
        if self.stalls && self.tick {
            cx.waker().wake_by_ref();
            return true;
        }
        false
    }
}

impl AsyncWrite for ChokeWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        assert!(
            !self.shut_down,
            "write after shutdown reached the inner writer"
        );
        if self.fail {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "boom")));
        }
        if self.stall(cx) {
            return Poll::Pending;
        }
        let n = buf.len().min(self.max);
        self.data.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stall(cx) {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stall(cx) {
            return Poll::Pending;
        }
        self.shut_down = true;
        Poll::Ready(Ok(()))
    }
}

/// A reader that returns at most `max` bytes per call and, if `stalls`, `Pending` on
/// every other call.
struct ChokeReader {
    data: Vec<u8>,
    pos: usize,
    max: usize,
    stalls: bool,
    tick: bool,
}

impl ChokeReader {
    fn new(data: Vec<u8>, max: usize, stalls: bool) -> Self {
        ChokeReader {
            data,
            pos: 0,
            max,
            stalls,
            tick: false,
        }
    }
}

impl AsyncRead for ChokeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.tick = !self.tick;
        if self.stalls && self.tick {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf
            .remaining()
            .min(self.max)
            .min(self.data.len() - self.pos);
        buf.put_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Encrypts `plain` written in pieces of the given sizes (cycled) into a `ChokeWriter`.
async fn encrypt_with(
    plain: &[u8],
    header: Header,
    key: &DataKey,
    pieces: &[usize],
    inner: ChokeWriter,
    flush_each: bool,
) -> ChokeWriter {
    let mut w = EncryptWriter::new(inner, header, key);
    let mut rest = plain;
    for &piece in pieces.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(piece.min(rest.len()));
        w.write_all(now).await.unwrap();
        if flush_each {
            w.flush().await.unwrap();
        }
        rest = later;
    }
    w.shutdown().await.unwrap();
    assert!(w.get_ref().shut_down);
    w.into_inner()
}

fn encrypt(plain: &[u8], chunk_size: u32, key: &DataKey) -> Vec<u8> {
    let header = Header::new(fields("b1"), chunk_size).unwrap();
    rt().block_on(encrypt_with(
        plain,
        header,
        key,
        &[7],
        ChokeWriter::new(usize::MAX, false),
        false,
    ))
    .data
}

fn to_crypt(e: io::Error) -> CryptError {
    match crypt_error(&e) {
        Some(c) => c.duplicate(),
        None => CryptError::Io(e),
    }
}

/// Reads the header and body; returns the plaintext released and how reading ended.
async fn decrypt_with(
    obj: &[u8],
    key: &DataKey,
    read_size: usize,
    inner_max: usize,
    stalls: bool,
) -> (Vec<u8>, Result<(), CryptError>) {
    let mut r = ChokeReader::new(obj.to_vec(), inner_max, stalls);
    let header = match Header::read_from(&mut r).await {
        Ok(h) => h,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut d = DecryptReader::new(r, header, key);
    let mut out = Vec::new();
    let mut buf = vec![0; read_size];
    loop {
        match d.read(&mut buf).await {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                return (out, Err(to_crypt(e)));
            }
        }
    }
}

fn decrypt(obj: &[u8], key: &DataKey) -> (Vec<u8>, Result<(), CryptError>) {
    rt().block_on(decrypt_with(obj, key, 13, 11, false))
}

fn header_len(obj: &[u8]) -> usize {
    FIXED_HEADER_LEN + u32::from_be_bytes(obj[19..23].try_into().unwrap()) as usize
}

fn chunk_count(len: usize, chunk_size: usize) -> usize {
    len.div_ceil(chunk_size).max(1)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_with_short_writes_and_reads(
        len in 0usize..400,
        chunk_size in 16u32..=64,
        pieces in prop::collection::vec(1usize..100, 1..6),
        writer_max in 1usize..50,
        reader_max in 1usize..50,
        read_size in 1usize..100,
        stalls in any::<bool>(),
        flush_each in any::<bool>(),
    ) {
        let plain = plaintext(len);
        let k = key(7);
        let header = Header::new(fields("b1"), chunk_size).unwrap();
        let hlen = header.as_bytes().len();
        let rt = rt();
        let obj = rt
            .block_on(encrypt_with(
                &plain,
                header,
                &k,
                &pieces,
                ChokeWriter::new(writer_max, stalls),
                flush_each,
            ))
            .data;
        let chunks = chunk_count(len, chunk_size as usize);
        prop_assert_eq!(obj.len(), hlen + len + TAG_LEN * chunks);
        let (out, end) = rt.block_on(decrypt_with(&obj, &k, read_size, reader_max, stalls));
        prop_assert!(end.is_ok(), "{:?}", end);
        prop_assert_eq!(out, plain);
    }
}

#[tokio::test]
async fn round_trip_through_small_duplex_pipe() {
    let plain = plaintext(10_000);
    let k = key(9);
    let header = Header::new(fields("b1"), 100).unwrap();
    let (w, mut r) = tokio::io::duplex(37);
    let writer = {
        let plain = plain.clone();
        let k = key(9);
        tokio::spawn(async move {
            let mut w = EncryptWriter::new(w, header, &k);
            for piece in plain.chunks(333) {
                w.write_all(piece).await.unwrap();
            }
            w.shutdown().await.unwrap();
        })
    };
    let header = Header::read_from(&mut r).await.unwrap();
    assert_eq!(header.fields(), &fields("b1"));
    assert_eq!(header.chunk_size(), 100);
    let mut out = Vec::new();
    DecryptReader::new(r, header, &k)
        .read_to_end(&mut out)
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(out, plain);
}

#[test]
fn header_layout_matches_the_spec() {
    let header = Header::new(fields("b1"), 4096).unwrap();
    let raw = header.as_bytes();
    assert_eq!(&raw[..6], MAGIC);
    assert_eq!(raw[6], 1);
    assert_eq!(raw[7], 1);
    assert_eq!(&raw[8..12], &4096u32.to_be_bytes());
    assert_eq!(&raw[12..19], &header.nonce_prefix);
    let json_len = u32::from_be_bytes(raw[19..23].try_into().unwrap()) as usize;
    assert_eq!(raw.len(), 23 + json_len);
    let json: serde_json::Value = serde_json::from_slice(&raw[23..]).unwrap();
    assert_eq!(json["backup_id"], "b1");
    assert_eq!(json["database"], "app");
    assert_eq!(json["compression"], "zstd");
    assert_eq!(
        json["key_id"],
        "arn:aws:kms:eu-west-1:111122223333:key/test"
    );
    assert_eq!(json["wrapped_key"], "3q2+7wD/");
    // Fresh randomness per header.
    let other = Header::new(fields("b1"), 4096).unwrap();
    assert_ne!(header.nonce_prefix, other.nonce_prefix);
}

/// Vector produced by an independent Python implementation of docs/FORMAT.md
/// (the `cryptography` package's AESGCM), not by this code.
const KAT_OBJECT: &str = "50474b454550010100000010a0a1a2a3a4a5a6000000777b226261636b75705f6964223a226b61742d30303031222c226461746162617365223a226b6174222c22636f6d7072657373696f6e223a226e6f6e65222c226b65795f6964223a22746573742d6b656b222c22777261707065645f6b6579223a2241414633636d46776347566b4c57746c6566383d227d7ab677ccf3246556024cb3eeb4613818c9978e660daf977600b4e3bd5ff31bd3268765e7fb5995fb8fff9254f9128e52a540d1a17480adf913517cbaac2e5ed398d9e49dd8c03165cbdd149f4c5556873c6b5b421f4809ea";
const KAT_PLAINTEXT: &[u8] = b"pgkeep known-answer vector, 40 bytes...!";

fn kat_key() -> DataKey {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    zeroize::Zeroizing::new(k)
}

fn kat_fields() -> HeaderFields {
    HeaderFields {
        backup_id: "kat-0001".into(),
        database: "kat".into(),
        compression: "none".into(),
        key_id: "test-kek".into(),
        wrapped_key: b"\x00\x01wrapped-key\xff".to_vec(),
    }
}

#[test]
fn known_answer_vector_decrypts() {
    let obj = hex::decode(KAT_OBJECT).unwrap();
    let (out, end) = decrypt(&obj, &kat_key());
    end.unwrap();
    assert_eq!(out, KAT_PLAINTEXT);
    let header = rt().block_on(Header::read_from(&mut &obj[..])).unwrap();
    assert_eq!(header.fields(), &kat_fields());
}

#[test]
fn known_answer_vector_is_reproduced_by_the_writer() {
    let mut header = Header::new(kat_fields(), 16).unwrap();
    let prefix = hex::decode("a0a1a2a3a4a5a6").unwrap();
    header.nonce_prefix.copy_from_slice(&prefix);
    header.raw[12..19].copy_from_slice(&prefix);
    let obj = rt()
        .block_on(encrypt_with(
            KAT_PLAINTEXT,
            header,
            &kat_key(),
            &[5],
            ChokeWriter::new(3, true),
            false,
        ))
        .data;
    assert_eq!(hex::encode(obj), KAT_OBJECT);
}

#[test]
fn empty_plaintext_is_one_empty_final_chunk() {
    let k = key(1);
    let obj = encrypt(b"", 16, &k);
    assert_eq!(obj.len(), header_len(&obj) + TAG_LEN);
    let (out, end) = decrypt(&obj, &k);
    end.unwrap();
    assert!(out.is_empty());
}

#[test]
fn exact_multiple_of_chunk_size_has_no_extra_chunk() {
    let k = key(1);
    let plain = plaintext(64);
    let obj = encrypt(&plain, 16, &k);
    assert_eq!(obj.len(), header_len(&obj) + 64 + 4 * TAG_LEN);
    let (out, end) = decrypt(&obj, &k);
    end.unwrap();
    assert_eq!(out, plain);
}

#[test]
fn flipping_any_byte_is_detected() {
    let k = key(3);
    let cs = 16usize;
    for len in [0usize, 5, 16, 50, 64] {
        let plain = plaintext(len);
        let obj = encrypt(&plain, cs as u32, &k);
        let hlen = header_len(&obj);
        for pos in 0..obj.len() {
            for mask in [0x01u8, 0x80] {
                let mut bad = obj.clone();
                bad[pos] ^= mask;
                let (out, end) = decrypt(&bad, &k);
                let err = end.expect_err(&format!("len {len}: flip {mask:#x} at {pos}"));
                assert!(plain.starts_with(&out), "released unauthenticated bytes");
                match pos {
                    0..=5 => assert!(matches!(err, CryptError::NotEncrypted), "{err:?}"),
                    6 => assert!(matches!(err, CryptError::UnsupportedVersion(_)), "{err:?}"),
                    7 => assert!(matches!(err, CryptError::UnsupportedAead(_)), "{err:?}"),
                    p if p >= hlen => {
                        let chunk = ((p - hlen) / (cs + TAG_LEN)) as u64;
                        assert!(
                            matches!(err, CryptError::ChunkAuthentication { chunk: c } if c == chunk),
                            "flip at {p}: {err:?}"
                        );
                        assert_eq!(out.len(), chunk as usize * cs);
                    }
                    // A JSON length one larger swallows the first ciphertext byte, and
                    // when that (random) byte is JSON white space the header still parses:
                    // the shortened body then fails as truncated or unauthentic.
                    _ => assert!(
                        matches!(
                            err,
                            CryptError::BadHeader(_)
                                | CryptError::ChunkAuthentication { chunk: 0 }
                                | CryptError::Truncated { chunks: 0 }
                        ),
                        "flip at {pos}: {err:?}"
                    ),
                }
            }
        }
    }
}

#[test]
fn truncation_at_any_length_is_detected() {
    let k = key(4);
    let cs = 16usize;
    for len in [0usize, 5, 16, 50, 64] {
        let plain = plaintext(len);
        let obj = encrypt(&plain, cs as u32, &k);
        let hlen = header_len(&obj);
        for cut in 0..obj.len() {
            let (out, end) = decrypt(&obj[..cut], &k);
            let err = end.expect_err(&format!("len {len}: cut at {cut}"));
            assert!(plain.starts_with(&out));
            if cut < hlen {
                assert!(
                    matches!(err, CryptError::BadHeader(_)),
                    "cut {cut}: {err:?}"
                );
                continue;
            }
            let body = cut - hlen;
            let (whole, rest) = (body / (cs + TAG_LEN), body % (cs + TAG_LEN));
            if rest < TAG_LEN {
                // Cut on a chunk boundary (or inside what can only be a tag).
                assert!(
                    matches!(err, CryptError::Truncated { chunks } if chunks == whole as u64),
                    "cut {cut}: {err:?}"
                );
            } else {
                assert!(
                    matches!(err, CryptError::ChunkAuthentication { chunk } if chunk == whole as u64),
                    "cut {cut}: {err:?}"
                );
            }
        }
    }
}

fn chunk_ranges(obj: &[u8], cs: usize) -> Vec<std::ops::Range<usize>> {
    let hlen = header_len(obj);
    (hlen..obj.len())
        .step_by(cs + TAG_LEN)
        .map(|start| start..(start + cs + TAG_LEN).min(obj.len()))
        .collect()
}

#[test]
fn reordered_dropped_or_duplicated_chunks_are_detected() {
    let k = key(5);
    for len in [64usize, 70] {
        let plain = plaintext(len);
        let obj = encrypt(&plain, 16, &k);
        let chunks = chunk_ranges(&obj, 16);
        let hlen = header_len(&obj);
        let rebuild = |order: &[usize]| {
            let mut v = obj[..hlen].to_vec();
            for &i in order {
                v.extend_from_slice(&obj[chunks[i].clone()]);
            }
            v
        };
        let n = chunks.len();
        assert_eq!(rebuild(&(0..n).collect::<Vec<_>>()), obj);
        let mut swapped_last = (0..n).collect::<Vec<_>>();
        swapped_last.swap(n - 2, n - 1);
        let cases: Vec<(Vec<usize>, u64)> = vec![
            (vec![1, 0, 2, 3, 4], 0),
            (vec![0, 2, 1, 3, 4], 1),
            (swapped_last, n as u64 - 2),
            (vec![0, 2, 3, 4], 1),
            (vec![0, 1, 1, 2, 3, 4], 2),
        ];
        for (order, failing) in cases {
            let order: Vec<usize> = order.into_iter().filter(|&i| i < n).collect();
            let (out, end) = decrypt(&rebuild(&order), &k);
            let err = end.expect_err(&format!("order {order:?}"));
            assert!(plain.starts_with(&out));
            assert!(
                matches!(err, CryptError::ChunkAuthentication { chunk } if chunk == failing),
                "len {len} order {order:?}: {err:?}"
            );
        }
    }
}

#[test]
fn appended_bytes_are_detected() {
    let k = key(6);
    for len in [0usize, 5, 16, 50, 64] {
        let plain = plaintext(len);
        let obj = encrypt(&plain, 16, &k);
        let last = chunk_ranges(&obj, 16).last().unwrap().clone();
        let final_is_full = last.len() == 16 + TAG_LEN;
        for extra in [
            vec![0u8],
            vec![0u8; 15],
            vec![0u8; 40],
            obj[last.clone()].to_vec(),
        ] {
            let mut bad = obj.clone();
            bad.extend_from_slice(&extra);
            let (out, end) = decrypt(&bad, &k);
            let err = end.expect_err(&format!("len {len} + {} bytes", extra.len()));
            assert!(plain.starts_with(&out));
            if final_is_full {
                assert!(matches!(err, CryptError::TrailingData), "{err:?}");
            } else {
                assert!(
                    matches!(
                        err,
                        CryptError::TrailingData | CryptError::ChunkAuthentication { .. }
                    ),
                    "{err:?}"
                );
            }
        }
    }
}

#[test]
fn wrong_key_fails_on_chunk_zero() {
    for len in [0usize, 10, 100] {
        let obj = encrypt(&plaintext(len), 16, &key(1));
        let (out, end) = decrypt(&obj, &key(2));
        assert!(out.is_empty());
        assert!(matches!(
            end,
            Err(CryptError::ChunkAuthentication { chunk: 0 })
        ));
    }
}

#[test]
fn header_from_another_backup_is_detected() {
    let k = key(8);
    let plain = plaintext(40);
    let a = encrypt(&plain, 16, &k);
    // Same key, same metadata, same plaintext: only the nonce prefix differs.
    let b = encrypt(&plain, 16, &k);
    let spliced = [&b[..header_len(&b)], &a[header_len(&a)..]].concat();
    let (out, end) = decrypt(&spliced, &k);
    assert!(out.is_empty());
    assert!(matches!(
        end,
        Err(CryptError::ChunkAuthentication { chunk: 0 })
    ));
    // Same nonce prefix, different metadata (another backup id of the same length).
    let mut relabelled = a.clone();
    let hlen = header_len(&a);
    let json = std::str::from_utf8(&a[23..hlen])
        .unwrap()
        .replace("\"b1\"", "\"b2\"");
    relabelled[23..hlen].copy_from_slice(json.as_bytes());
    assert_ne!(relabelled, a);
    let (_, end) = decrypt(&relabelled, &k);
    assert!(matches!(
        end,
        Err(CryptError::ChunkAuthentication { chunk: 0 })
    ));
}

fn parse(bytes: &[u8]) -> Result<Header, CryptError> {
    rt().block_on(Header::read_from(&mut &bytes[..]))
}

fn raw_header(version: u8, aead: u8, chunk_size: u32, json: &[u8]) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&[version, aead]);
    v.extend_from_slice(&chunk_size.to_be_bytes());
    v.extend_from_slice(&[9; 7]);
    v.extend_from_slice(&(json.len() as u32).to_be_bytes());
    v.extend_from_slice(json);
    v
}

const GOOD_JSON: &[u8] =
    br#"{"backup_id":"b","database":"d","compression":"none","key_id":"k","wrapped_key":"AAE="}"#;

#[test]
fn header_parsing_accepts_valid_and_ignores_unknown_fields() {
    let h = parse(&raw_header(1, 1, 16, GOOD_JSON)).unwrap();
    assert_eq!(h.fields().wrapped_key, vec![0, 1]);
    assert_eq!(h.chunk_size(), 16);
    let extra = br#" {"future":{"x":[1,2]},"backup_id":"b","database":"d","compression":"none","key_id":"k","wrapped_key":"AAE=","z":1}"#;
    let h = parse(&raw_header(1, 1, MAX_CHUNK_SIZE, extra)).unwrap();
    assert_eq!(h.fields().backup_id, "b");
    assert_eq!(h.as_bytes(), &raw_header(1, 1, MAX_CHUNK_SIZE, extra)[..]);
}

#[test]
fn header_parsing_rejects_bad_headers() {
    // pg_dump's own custom format, i.e. an unencrypted dump.
    assert!(matches!(
        parse(b"PGDMP\x01\x0e\x00"),
        Err(CryptError::NotEncrypted)
    ));
    assert!(matches!(parse(b"PGK"), Err(CryptError::BadHeader(_))));
    assert!(matches!(parse(b"XY"), Err(CryptError::NotEncrypted)));
    assert!(matches!(parse(b""), Err(CryptError::BadHeader(_))));
    assert!(matches!(
        parse(&raw_header(2, 1, 16, GOOD_JSON)),
        Err(CryptError::UnsupportedVersion(2))
    ));
    assert!(matches!(
        parse(&raw_header(1, 2, 16, GOOD_JSON)),
        Err(CryptError::UnsupportedAead(2))
    ));
    let bad = |h: Vec<u8>| assert!(matches!(parse(&h), Err(CryptError::BadHeader(_))), "{h:?}");
    bad(raw_header(1, 1, 15, GOOD_JSON));
    bad(raw_header(1, 1, MAX_CHUNK_SIZE + 1, GOOD_JSON));
    bad(raw_header(1, 1, 0, GOOD_JSON));
    bad(raw_header(1, 1, 16, br#"["b","d","none","k","AAE="]"#));
    bad(raw_header(1, 1, 16, br#"{"backup_id":"b"}"#));
    bad(raw_header(1, 1, 16, &GOOD_JSON[..GOOD_JSON.len() - 1]));
    bad(raw_header(
        1,
        1,
        16,
        br#"{"backup_id":"b","database":"d","compression":"none","key_id":"k","wrapped_key":"AAE"}"#,
    ));
    bad(raw_header(1, 1, 16, b"{\"backup_id\":\"\xff\"}"));
    // Declared JSON length beyond the limit, and JSON cut short by the end of the object.
    let mut long = raw_header(1, 1, 16, GOOD_JSON);
    long[19..23].copy_from_slice(&(MAX_JSON_LEN + 1).to_be_bytes());
    bad(long);
    let mut short = raw_header(1, 1, 16, GOOD_JSON);
    short.pop();
    bad(short);
    bad(raw_header(1, 1, 16, GOOD_JSON)[..20].to_vec());
}

#[test]
fn header_new_validates() {
    assert!(matches!(
        Header::new(fields("b"), 15),
        Err(CryptError::BadHeader(_))
    ));
    assert!(matches!(
        Header::new(fields("b"), MAX_CHUNK_SIZE + 1),
        Err(CryptError::BadHeader(_))
    ));
    assert!(Header::new(fields("b"), DEFAULT_CHUNK_SIZE).is_ok());
    let huge = fields(&"x".repeat(MAX_JSON_LEN as usize));
    assert!(matches!(
        Header::new(huge, 16),
        Err(CryptError::BadHeader(_))
    ));
}

#[test]
fn read_from_consumes_exactly_the_header() {
    let k = key(2);
    let obj = encrypt(&plaintext(30), 16, &k);
    let mut rest = &obj[..];
    let header = rt().block_on(Header::read_from(&mut rest)).unwrap();
    assert_eq!(header.as_bytes(), &obj[..header_len(&obj)]);
    assert_eq!(rest, &obj[header_len(&obj)..]);
    assert_eq!(header.fields(), &fields("b1"));
}

#[test]
fn errors_are_sticky_and_recoverable_from_io_errors() {
    let k = key(3);
    let mut obj = encrypt(&plaintext(100), 16, &k);
    let n = obj.len();
    obj[n - 1] ^= 1;
    rt().block_on(async {
        let mut r = &obj[..];
        let header = Header::read_from(&mut r).await.unwrap();
        let mut d = DecryptReader::new(r, header, &k);
        let mut out = Vec::new();
        let err = d.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            crypt_error(&err),
            Some(CryptError::ChunkAuthentication { chunk: 6 })
        ));
        assert_eq!(
            err.to_string(),
            "chunk 6 failed authentication: the object is corrupt or was tampered with, or the key is wrong"
        );
        assert_eq!(out.len(), 96);
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            let again = d.read(&mut buf).await.unwrap_err();
            assert!(matches!(
                crypt_error(&again),
                Some(CryptError::ChunkAuthentication { chunk: 6 })
            ));
        }
    });
    assert!(crypt_error(&io::Error::other("plain")).is_none());
}

#[test]
fn writer_errors_are_sticky() {
    rt().block_on(async {
        let header = Header::new(fields("b"), 16).unwrap();
        let mut inner = ChokeWriter::new(usize::MAX, false);
        inner.fail = true;
        let mut w = EncryptWriter::new(inner, header, &key(1));
        let err = w.write_all(b"hello").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(crypt_error(&err).is_none());
        let mut inner = w.into_inner();
        inner.fail = false;
        let header = Header::new(fields("b"), 16).unwrap();
        let mut w = EncryptWriter::new(inner, header, &key(1));
        w.inner.fail = true;
        assert!(w.write_all(&[0; 40]).await.is_err());
        w.inner.fail = false;
        for _ in 0..2 {
            let err = w.write(b"x").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
            assert!(matches!(crypt_error(&err), Some(CryptError::Io(_))));
            assert!(w.flush().await.is_err());
            assert!(w.shutdown().await.is_err());
        }
        assert!(!w.get_ref().shut_down);
    });
}

#[test]
fn write_after_shutdown_fails() {
    let obj = rt().block_on(async {
        let header = Header::new(fields("b"), 16).unwrap();
        let mut w = EncryptWriter::new(ChokeWriter::new(4, true), header, &key(1));
        w.write_all(b"abc").await.unwrap();
        w.shutdown().await.unwrap();
        assert!(w.write(b"d").await.is_err());
        // Shutting down again is harmless and does not re-seal.
        let len = w.get_ref().data.len();
        w.shutdown().await.unwrap();
        assert_eq!(w.get_ref().data.len(), len);
        w.into_inner().data
    });
    let (out, end) = decrypt(&obj, &key(1));
    end.unwrap();
    assert_eq!(out, b"abc");
}

#[test]
fn flush_pushes_sealed_chunks_only() {
    rt().block_on(async {
        let header = Header::new(fields("b"), 16).unwrap();
        let hlen = header.as_bytes().len();
        let mut w = EncryptWriter::new(ChokeWriter::new(5, true), header, &key(1));
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().data.len(), hlen);
        w.write_all(&[1; 32]).await.unwrap();
        w.flush().await.unwrap();
        // The second full chunk may still be the last one: not sealed yet.
        assert_eq!(w.get_ref().data.len(), hlen + 16 + TAG_LEN);
        w.write_all(&[2; 1]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().data.len(), hlen + 2 * (16 + TAG_LEN));
        w.shutdown().await.unwrap();
        assert_eq!(
            w.get_ref().data.len(),
            hlen + 2 * (16 + TAG_LEN) + 1 + TAG_LEN
        );
    });
}

#[test]
fn dropping_the_writer_before_shutdown_yields_a_truncated_object() {
    let obj = rt().block_on(async {
        let header = Header::new(fields("b"), 16).unwrap();
        let mut w = EncryptWriter::new(ChokeWriter::new(64, false), header, &key(1));
        w.write_all(&[7; 40]).await.unwrap();
        w.flush().await.unwrap();
        w.into_inner().data
    });
    let (out, end) = decrypt(&obj, &key(1));
    assert_eq!(out, [7; 16]);
    assert!(
        matches!(end, Err(CryptError::Truncated { chunks: 2 })),
        "{end:?}"
    );
}

#[test]
fn chunk_counter_overflow_is_an_error() {
    rt().block_on(async {
        // The last representable counter still works, on both sides.
        let header = Header::new(fields("b"), 16).unwrap();
        let mut w = EncryptWriter::new(ChokeWriter::new(64, false), header.clone(), &key(1));
        w.counter = u64::from(u32::MAX);
        w.write_all(&[7; 16]).await.unwrap();
        w.shutdown().await.unwrap();
        let body = w.into_inner().data[header.as_bytes().len()..].to_vec();
        let mut d = DecryptReader::new(&body[..], header.clone(), &key(1));
        d.counter = u64::from(u32::MAX);
        let mut out = Vec::new();
        d.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, [7; 16]);

        // One more chunk does not fit the 32-bit counter.
        let mut w = EncryptWriter::new(ChokeWriter::new(64, false), header.clone(), &key(1));
        w.counter = u64::from(u32::MAX);
        w.write_all(&[7; 17]).await.unwrap();
        let err = w.shutdown().await.unwrap_err();
        assert!(matches!(crypt_error(&err), Some(CryptError::TooManyChunks)));

        let mut d = DecryptReader::new(&body[..], header, &key(1));
        d.counter = u64::from(u32::MAX) + 1;
        let err = d.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(matches!(crypt_error(&err), Some(CryptError::TooManyChunks)));
    });
}

/// Throughput check; run with
/// `cargo test --release -p pgkeep --lib pipeline::crypt -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_256_mib() {
    const LEN: usize = 256 << 20;
    let plain = plaintext(1 << 20);
    let k = key(1);
    rt().block_on(async {
        let header = Header::new(fields("b"), DEFAULT_CHUNK_SIZE).unwrap();
        let mut w = EncryptWriter::new(Vec::with_capacity(LEN + (1 << 20)), header, &k);
        for _ in 0..LEN / plain.len() {
            w.write_all(&plain).await.unwrap();
        }
        w.shutdown().await.unwrap();
        let obj = w.into_inner();

        // Timed separately into a sink, so page faults of the output Vec do not count.
        let header = Header::new(fields("b"), DEFAULT_CHUNK_SIZE).unwrap();
        let mut w = EncryptWriter::new(tokio::io::sink(), header, &k);
        let start = std::time::Instant::now();
        for _ in 0..LEN / plain.len() {
            for piece in plain.chunks(64 << 10) {
                w.write_all(piece).await.unwrap();
            }
        }
        w.shutdown().await.unwrap();
        let enc = start.elapsed();

        let start = std::time::Instant::now();
        let mut r = &obj[..];
        let header = Header::read_from(&mut r).await.unwrap();
        let mut d = DecryptReader::new(r, header, &k);
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        loop {
            let n = d.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        let dec = start.elapsed();
        assert_eq!(total, LEN);
        let mbs = |d: std::time::Duration| LEN as f64 / (1 << 20) as f64 / d.as_secs_f64();
        println!(
            "encrypt: {:.0} MiB/s, decrypt: {:.0} MiB/s",
            mbs(enc),
            mbs(dec)
        );
    });
}
