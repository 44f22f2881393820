//! Real phones for media tests: baresip in network namespaces (it refuses a loopback
//! media address), each playing a tone from a WAV file and dumping what it decodes.
//! Needs root for the namespaces (CI runs as root) and the baresip package.

use super::{Server, require_tool};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Runs `ip` with `args`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this one by a veth pair, with `outside` on our side
/// and `inside` in the namespace (a /30), and a default route back to us. Dropping it
/// deletes the namespace, which takes the veth pair with it.
pub struct Namespace {
    name: String,
}

impl Namespace {
    pub fn create(name: &str, outside: Ipv4Addr, inside: Ipv4Addr) -> Namespace {
        // A namespace left behind by a killed run of this test goes first.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = Namespace { name: name.into() };
        let host_if = format!("{name}h");
        let ns_if = format!("{name}n");
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", name]);
        ip(&["addr", "add", &format!("{outside}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ns.exec_ip(&["addr", "add", &format!("{inside}/30"), "dev", &ns_if]);
        ns.exec_ip(&["link", "set", &ns_if, "up"]);
        ns.exec_ip(&["link", "set", "lo", "up"]);
        ns.exec_ip(&["route", "add", "default", "via", &outside.to_string()]);
        ns
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn interface(&self) -> String {
        format!("{}n", self.name)
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A running baresip, killed when dropped.
pub struct Phone {
    child: Child,
    pub dir: PathBuf,
}

impl Phone {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default()
    }

    /// Waits up to `limit` for the phone to quit by itself.
    pub fn wait(&mut self, limit: Duration) -> bool {
        super::wait_until(limit, || matches!(self.child.try_wait(), Ok(Some(_))))
    }

    /// The audio it decoded, from its sndfile dump.
    pub fn heard(&self) -> Audio {
        let dump = std::fs::read_dir(&self.dir)
            .expect("phone dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("{} recorded no received audio", self.dir.display()));
        read_wav(&dump)
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mono audio: the first channel of a WAV file and its rate.
pub struct Audio {
    pub rate: u32,
    pub samples: Vec<i16>,
}

/// A 16-bit WAV file holding `seconds` of a sine at `hz`, sampled at `rate`, the same
/// in each of its `channels`.
pub fn write_tone(path: &Path, hz: f64, seconds: u32, rate: u32, channels: u16) {
    let samples: Vec<i16> = (0..rate * seconds)
        .flat_map(|i| {
            let t = f64::from(i) / f64::from(rate);
            let s = (12_000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
            std::iter::repeat_n(s, usize::from(channels))
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&channels.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    wav.extend_from_slice(&(2 * channels).to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).expect("write WAV");
}

/// The first channel of a 16-bit PCM WAV file (the chunk walk tolerates extra chunks).
pub fn read_wav(path: &Path) -> Audio {
    let bytes = std::fs::read(path).expect("read WAV");
    assert!(bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE");
    let (mut rate, mut channels) = (0u32, 1usize);
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        if id == b"fmt " {
            channels = usize::from(u16::from_le_bytes([body[2], body[3]]));
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            let bits = u16::from_le_bytes([body[14], body[15]]);
            assert_eq!(bits, 16, "{}: 16-bit expected", path.display());
        }
        if id == b"data" {
            let samples = body
                .chunks_exact(2 * channels)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            return Audio { rate, samples };
        }
        at += 8 + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// Signal power at `hz` (Goertzel) as a share of the total power of `samples`.
pub fn tone_share(samples: &[i16], rate: u32, hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut total = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
        total += x * x;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A pure sine of N samples gives power N^2 A^2 / 4 and total N A^2 / 2.
    if total == 0.0 {
        0.0
    } else {
        2.0 * power / (samples.len() as f64 * total)
    }
}

/// The frequency zero crossings say `samples` has.
pub fn zero_crossing_hz(samples: &[i16], rate: u32) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(rate))
}

/// Asserts that `audio`, which a phone decoded, holds a second of the tone at `hz`.
pub fn assert_tone(audio: &Audio, who: &str, hz: f64) {
    let rate = audio.rate as usize;
    // Loud samples: the far end's tone, skipping silence before the media flowed, and
    // a further 100 ms for codecs that fade in (a decoder's first frames).
    let start = audio.samples.iter().position(|s| s.unsigned_abs() > 2_000);
    let Some(start) = start else {
        panic!(
            "{who} received only silence ({} samples)",
            audio.samples.len()
        );
    };
    let heard = &audio.samples[(start + rate / 10).min(audio.samples.len())..];
    assert!(
        heard.len() >= rate,
        "{who} received under a second of audio: {} samples at {} Hz",
        heard.len(),
        audio.rate
    );
    let second = &heard[..rate];
    let share = tone_share(second, audio.rate, hz);
    // The strongest frequency near the expected one, 5 Hz apart: a glitch (a frame
    // concealed under load) adds zero crossings but moves no energy to another pitch.
    let peak = (-40..=40)
        .map(|step| hz + f64::from(step) * 5.0)
        .max_by(|a, b| {
            tone_share(second, audio.rate, *a).total_cmp(&tone_share(second, audio.rate, *b))
        })
        .unwrap_or(hz);
    let zc = zero_crossing_hz(second, audio.rate);
    assert!(
        share > 0.8 && (peak - hz).abs() <= 10.0,
        "{who} did not hear {hz} Hz: {:.0}% of the power at {hz} Hz, the strongest pitch \
         near it is {peak} Hz, zero crossings say {zc:.0} Hz",
        share * 100.0
    );
}

/// One phone of a call: its extension, the codecs it offers (baresip spelling, e.g.
/// `PCMU`, `G722/16000/1`, `opus/48000/2`) and the tone it plays.
pub struct PhoneSpec<'a> {
    pub user: &'a str,
    pub codecs: &'a str,
    pub tone_hz: f64,
}

/// Two namespaces and switchboard listening on the caller side's host address.
pub struct Lab {
    pub server: Server,
    caller_ns: Namespace,
    callee_ns: Namespace,
    caller_ip: Ipv4Addr,
    callee_ip: Ipv4Addr,
    pub dir: tempfile::TempDir,
}

const MODULES: &str = "/usr/lib/baresip/modules";

impl Lab {
    /// Extensions 1000 and 1001 (passwords `interop-<ext>`, MD5) plus `config`.
    pub fn start(config: &str) -> Lab {
        Self::start_with_algorithms(config, "auth_algorithms = [\"MD5\"]\n")
    }

    /// Like [`Lab::start`], but the extensions set no `auth_algorithms`: they are
    /// challenged with `[sip] auth_algorithms`, the default one (`config` cannot set
    /// `[sip]` keys).
    pub fn start_with_default_algorithms(config: &str) -> Lab {
        Self::start_with_algorithms(config, "")
    }

    /// `algorithms` is the extensions' `auth_algorithms` line, or nothing.
    fn start_with_algorithms(config: &str, algorithms: &str) -> Lab {
        require_tool("baresip", "baresip");
        require_tool("ip", "iproute2");
        let uid = Command::new("id").arg("-u").output().expect("id");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "network namespaces need root (CI runs as root)"
        );
        for module in ["aufile", "g711", "g722", "opus", "sndfile"] {
            assert!(
                Path::new(MODULES).join(format!("{module}.so")).exists(),
                "baresip's {module} module is missing"
            );
        }
        // Two /30 subnets from the process id and a per-process counter, so parallel
        // tests and runs elsewhere do not collide.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let (b, c) = (
            100 + ((pid + 37 * n) % 100) as u8,
            ((pid / 100 + 7 * n) % 250) as u8,
        );
        let host_a = Ipv4Addr::new(10, b, c, 1);
        let caller_ip = Ipv4Addr::new(10, b, c, 2);
        let host_b = Ipv4Addr::new(10, b, c, 5);
        let callee_ip = Ipv4Addr::new(10, b, c, 6);
        let tag = format!("{pid}{n}");
        let caller_ns = Namespace::create(&format!("sba{tag}"), host_a, caller_ip);
        let callee_ns = Namespace::create(&format!("sbb{tag}"), host_b, callee_ip);
        let server = Server::start_on(
            IpAddr::V4(host_a),
            &format!(
                "[media]\npublic_address = \"{host_a}\"\n{config}\n\
                 [extensions.1000]\npassword = \"interop-1000\"\n{algorithms}\
                 [extensions.1001]\npassword = \"interop-1001\"\n{algorithms}"
            ),
        );
        Lab {
            server,
            caller_ns,
            callee_ns,
            caller_ip,
            callee_ip,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn phone(&self, caller: bool, spec: &PhoneSpec, args: &[&str], extra: &str) -> Phone {
        let (ns, ip, name) = if caller {
            (&self.caller_ns, self.caller_ip, "caller")
        } else {
            (&self.callee_ns, self.callee_ip, "callee")
        };
        let home = self.dir.path().join(name);
        std::fs::create_dir_all(&home).expect("mkdir");
        // baresip's aufile wants the sample rate and channels of the codec it sends with.
        let (rate, channels) = match spec.codecs.split(['/', ',']).next() {
            Some("G722") => (16000, 1),
            Some("opus") => (48000, 2),
            _ => (8000, 1),
        };
        write_tone(&home.join("tone.wav"), spec.tone_hz, 30, rate, channels);
        let config = format!(
            "poll_method\t\tepoll\nsip_listen\t\t{ip}:5060\nsip_trans_def\t\tudp\n\
             audio_player\t\taubridge,nil\naudio_alert\t\taubridge,nil\n\
             audio_source\t\taufile,{tone}\naudio_channels\t\t1\n\
             net_interface\t\t{iface}\nmodule_path\t\t{MODULES}\n\
             module\t\t\tg711.so\nmodule\t\t\tg722.so\nmodule\t\t\topus.so\n\
             module\t\t\taufile.so\nmodule\t\t\taubridge.so\nmodule\t\t\tsndfile.so\n\
             module_app\t\taccount.so\nmodule_app\t\tmenu.so\nsnd_path\t\t{home}\n",
            tone = home.join("tone.wav").display(),
            iface = ns.interface(),
            home = home.display(),
        );
        std::fs::write(home.join("config"), config).expect("config");
        std::fs::write(
            home.join("accounts"),
            format!(
                "<sip:{user}@{sip}>;auth_pass=interop-{user};regint=600;audio_codecs={codecs}{extra}\n",
                user = spec.user,
                codecs = spec.codecs,
                sip = self.server.sip
            ),
        )
        .expect("accounts");
        let child = ns
            .command(Path::new("baresip"))
            .arg("-f")
            .arg(&home)
            .args(args)
            .stdout(std::fs::File::create(home.join("out.log")).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start baresip");
        Phone { child, dir: home }
    }

    /// Waits up to 10 s for a registration of `user` to show in the admin API.
    fn registers(&self, user: &str) -> bool {
        super::wait_until(Duration::from_secs(10), || {
            ureq::get(&format!("http://{}/api/registrations", self.server.admin))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .is_some_and(|body| body.contains(user))
        })
    }

    /// Starts `phone` on the callee side (it quits after 30 s) and returns it once it
    /// has registered; panics with its log if it does not within 10 s.
    pub fn registered_phone(&self, phone: &PhoneSpec) -> Phone {
        let started = self.phone(false, phone, &["-t", "30"], "");
        assert!(
            self.registers(phone.user),
            "baresip did not register: {}",
            started.log()
        );
        started
    }

    /// Registers the callee (auto answer), has the caller dial it and talk for
    /// `talk_secs`, and returns both phones once the caller has hung up.
    pub fn call(&self, caller: &PhoneSpec, callee: &PhoneSpec, talk_secs: u32) -> (Phone, Phone) {
        let callee_phone = self.phone(false, callee, &["-t", "40"], ";answermode=auto");
        assert!(
            self.registers(callee.user),
            "the callee baresip did not register: {}",
            callee_phone.log()
        );
        let dial = format!("/dial sip:{}@{}", callee.user, self.server.sip);
        let secs = talk_secs.to_string();
        let mut caller_phone = self.phone(true, caller, &["-t", &secs, "-e", &dial], "");
        // The caller talks for its -t seconds, then quits, hanging up.
        let done = caller_phone.wait(Duration::from_secs(u64::from(talk_secs) + 12));
        assert!(
            done,
            "the caller baresip did not finish: {}",
            caller_phone.log()
        );
        assert!(
            caller_phone.log().contains("Call established"),
            "the call was not established:\ncaller: {}\ncallee: {}",
            caller_phone.log(),
            callee_phone.log()
        );
        (caller_phone, callee_phone)
    }
}
