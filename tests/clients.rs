//! The real binary played by real clients nobody here wrote: ffmpeg, GStreamer's `rtspsrc`
//! (what QGroundControl uses) and the `retina` crate, over UDP and TCP.

mod common;

use std::time::Duration;

use common::Daemon;

const FRAMES: usize = 60;

fn ffmpeg_decode(url: &str, transport: &str) -> (usize, String, String) {
    common::ffmpeg_decode(url, transport, FRAMES)
}

fn check_ffmpeg(transport: &str) {
    let d = Daemon::start(&["--width", "640", "--height", "360"]);
    let (frames, dims, stderr) = ffmpeg_decode(&d.url(), transport);
    assert_eq!(
        frames,
        FRAMES,
        "ffmpeg over {transport} decoded {frames} frames; stderr:\n{stderr}\nserver:\n{}",
        d.log()
    );
    assert!(dims.ends_with("640x360"), "{dims}");
    assert!(stderr.trim().is_empty(), "ffmpeg reported errors over {transport}:\n{stderr}");
    let transport_log = if transport == "tcp" { "TCP interleaved" } else { "via UDP" };
    assert!(d.log().contains(transport_log), "{}", d.log());
}

#[test]
fn ffmpeg_decodes_over_tcp() {
    check_ffmpeg("tcp");
}

#[test]
fn ffmpeg_decodes_over_udp() {
    check_ffmpeg("udp");
}

fn check_gstreamer(protocol: &str) {
    let mut d = Daemon::start(&["--width", "640", "--height", "360"]);
    common::gst_rtspsrc_decode(&mut d, protocol, FRAMES);
}

#[test]
fn gstreamer_rtspsrc_decodes_over_tcp() {
    check_gstreamer("tcp");
}

#[test]
fn gstreamer_rtspsrc_decodes_over_udp() {
    check_gstreamer("udp");
}

#[test]
fn retina_receives_and_depacketizes_frames() {
    use futures::StreamExt;
    use retina::client::{PlayOptions, SessionOptions, SetupOptions};
    use retina::codec::{CodecItem, ParametersRef};

    let d = Daemon::start(&["--width", "320", "--height", "240"]);
    let url = url::Url::parse(&d.url()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut session = retina::client::Session::describe(url, SessionOptions::default()).await.unwrap();
        let vi = session.streams().iter().position(|s| s.media() == "video").expect("video stream");
        assert_eq!(session.streams()[vi].encoding_name(), "h264");
        match session.streams()[vi].parameters() {
            Some(ParametersRef::Video(v)) => assert_eq!(v.pixel_dimensions(), (320, 240)),
            other => panic!("no video parameters from the SDP: {other:?}"),
        }
        session.setup(vi, SetupOptions::default()).await.unwrap();
        let mut demuxed = session.play(PlayOptions::default()).await.unwrap().demuxed().unwrap();
        let mut frames = 0;
        let mut first_was_rap = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while frames < 30 {
            let item = tokio::time::timeout_at(deadline, demuxed.next()).await.expect("frames within 20 s");
            match item.expect("stream ended").expect("retina error") {
                CodecItem::VideoFrame(f) => {
                    first_was_rap.get_or_insert(f.is_random_access_point());
                    assert_eq!(f.loss(), 0);
                    assert!(!f.data().is_empty());
                    frames += 1;
                }
                CodecItem::Rtcp(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(first_was_rap, Some(true), "the first frame a client gets must be an IDR");
    });
}

#[test]
fn ten_concurrent_clients_mixed_udp_and_tcp_all_decode() {
    let d = Daemon::start(&["--width", "320", "--height", "240"]);
    let url = d.url();
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let transport = if i % 2 == 0 { "udp" } else { "tcp" };
                (transport, ffmpeg_decode(&url, transport))
            })
        })
        .collect();
    // Measure while they play.
    std::thread::sleep(Duration::from_millis(1500));
    let rss = d.rss_kib();
    for h in handles {
        let (transport, (frames, _, stderr)) = h.join().unwrap();
        assert_eq!(frames, FRAMES, "{transport} client decoded {frames}: {stderr}");
        // Ten ffmpeg processes pick their UDP ports at once and race for them: ffmpeg logs each
        // port it lost and tries the next one. Anything else it says is a problem.
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.ends_with("bind failed: Address already in use"))
            .collect();
        assert!(problems.is_empty(), "{transport}: {stderr}");
    }
    eprintln!("figure: server RSS with 10 clients playing: {rss} KiB");
}
