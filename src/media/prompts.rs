//! Prompts and hold music as audio in memory: WAV files read once, converted to mono
//! 8 or 16 kHz PCM (what the codecs take) and shared by every call that plays them.
//!
//! Prompts are found the way Asterisk finds its core sounds,
//! `<sounds_dir>/<language>/<name>.wav`, so an Asterisk sound pack can replace the
//! shipped set. Reading files blocks: callers load from a blocking task, never from the
//! media or SIP tasks.

use super::music::Music;
use super::wav::{self, Wav};
use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Mono PCM at 8000 or 16000 Hz.
#[derive(Debug, PartialEq, Eq)]
pub struct Clip {
    pub rate: u32,
    pub samples: Vec<i16>,
}

impl Clip {
    /// From a WAV: channels mixed down; 8 and 16 kHz kept, 32 and 48 kHz taken down to
    /// 16 kHz and 11.025/22.05/44.1 kHz to 8 kHz by averaging (prompts are speech; a
    /// pack in those rates is rare, and this keeps it playable).
    pub fn from_wav(wav: &Wav) -> Result<Clip, PromptError> {
        let channels = usize::from(wav.channels.max(1));
        let mono: Vec<i16> = wav
            .samples
            .chunks(channels)
            .map(|frame| {
                let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
                (sum / frame.len() as i32) as i16
            })
            .collect();
        let (rate, step) = match wav.sample_rate {
            8000 => (8000, 1),
            16000 => (16000, 1),
            32000 => (16000, 2),
            48000 => (16000, 3),
            11025 => (8000, 1),
            22050 => (8000, 2),
            44100 => (8000, 5),
            other => return Err(PromptError::Rate(other)),
        };
        let samples = if step == 1 {
            mono
        } else {
            mono.chunks(step)
                .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
                .collect()
        };
        Ok(Clip { rate, samples })
    }

    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.rate))
    }
}

#[derive(Debug)]
pub enum PromptError {
    /// The name is not a relative path inside the sounds folder.
    BadName(String),
    NotFound(PathBuf),
    Unreadable(PathBuf, String),
    Rate(u32),
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptError::BadName(name) => write!(
                f,
                "{name:?} is not a prompt name (a relative path without ..)"
            ),
            PromptError::NotFound(path) => write!(f, "no prompt at {}", path.display()),
            PromptError::Unreadable(path, why) => write!(f, "{}: {why}", path.display()),
            PromptError::Rate(rate) => write!(f, "unsupported sample rate {rate} Hz"),
        }
    }
}

impl std::error::Error for PromptError {}

/// The prompt library of a server: where prompts and hold music are, and the ones
/// read so far (one copy each, however many calls play them).
pub struct Prompts {
    dir: PathBuf,
    language: String,
    moh_dir: PathBuf,
    cache: Mutex<HashMap<PathBuf, Arc<Clip>>>,
    music: Mutex<HashMap<String, Arc<Music>>>,
}

impl Prompts {
    pub fn new(dir: PathBuf, language: String, moh_dir: PathBuf) -> Prompts {
        Prompts {
            dir,
            language,
            moh_dir,
            cache: Mutex::new(HashMap::new()),
            music: Mutex::new(HashMap::new()),
        }
    }

    /// The hold music of `class` (read once; [`Music::prepare`] encodes it). Blocks on
    /// the file system.
    pub fn music(&self, class: &str) -> Result<Arc<Music>, PromptError> {
        let plain = !class.is_empty() && Path::new(class).components().count() == 1;
        if !plain || class.starts_with('.') {
            return Err(PromptError::BadName(class.to_string()));
        }
        let cache = || self.music.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(music) = cache().get(class) {
            return Ok(music.clone());
        }
        let music = Music::new(load_music(&self.moh_dir, class)?);
        cache().insert(class.to_string(), music.clone());
        Ok(music)
    }

    /// Where prompt `name` lives: `<dir>/<language>/<name>.wav`, or `<dir>/<name>` when
    /// the name already ends in `.wav`.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, PromptError> {
        let relative = Path::new(name);
        let plain = !name.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(PromptError::BadName(name.to_string()));
        }
        Ok(if name.ends_with(".wav") {
            self.dir.join(relative)
        } else {
            self.dir.join(&self.language).join(format!("{name}.wav"))
        })
    }

    /// Reads prompt `name` (once; later calls share it). Blocks on the file system.
    pub fn load(&self, name: &str) -> Result<Arc<Clip>, PromptError> {
        let path = self.path_of(name)?;
        if let Some(clip) = self.lock().get(&path) {
            return Ok(clip.clone());
        }
        let clip = Arc::new(load_file(&path)?);
        self.lock().insert(path, clip.clone());
        Ok(clip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<Clip>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads one WAV file into a clip.
pub fn load_file(path: &Path) -> Result<Clip, PromptError> {
    if !path.is_file() {
        return Err(PromptError::NotFound(path.to_path_buf()));
    }
    let wav =
        wav::read(path).map_err(|e| PromptError::Unreadable(path.to_path_buf(), e.to_string()))?;
    Clip::from_wav(&wav)
}

/// The music of one class: every WAV file in `<moh_dir>/<class>/`, in name order,
/// joined into one loop at one rate (8 kHz unless all are 16 kHz).
pub fn load_music(moh_dir: &Path, class: &str) -> Result<Arc<Clip>, PromptError> {
    let dir = moh_dir.join(class);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| PromptError::Unreadable(dir.clone(), e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")))
        .collect();
    files.sort();
    let clips = files
        .iter()
        .map(|p| load_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    if clips.is_empty() {
        return Err(PromptError::NotFound(dir));
    }
    let rate = if clips.iter().all(|c| c.rate == 16000) {
        16000
    } else {
        8000
    };
    let mut samples = Vec::new();
    for clip in &clips {
        if clip.rate == rate {
            samples.extend_from_slice(&clip.samples);
        } else {
            // 16 kHz among 8 kHz pieces: keep every other averaged pair.
            samples.extend(
                clip.samples.chunks(2).map(|c| {
                    ((i32::from(c[0]) + i32::from(*c.last().unwrap_or(&c[0]))) / 2) as i16
                }),
            );
        }
    }
    Ok(Arc::new(Clip { rate, samples }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, samples: Vec<i16>) -> Wav {
        Wav {
            sample_rate: rate,
            channels,
            samples,
        }
    }

    #[test]
    fn clips_are_mono_at_8_or_16_khz() {
        let stereo = Clip::from_wav(&wav(8000, 2, vec![100, 300, -50, -150])).unwrap();
        assert_eq!(
            stereo,
            Clip {
                rate: 8000,
                samples: vec![200, -100]
            }
        );
        let high = Clip::from_wav(&wav(48000, 1, vec![3, 3, 3, 6, 6, 6])).unwrap();
        assert_eq!(
            high,
            Clip {
                rate: 16000,
                samples: vec![3, 6]
            }
        );
        assert!(matches!(
            Clip::from_wav(&wav(12345, 1, vec![0])),
            Err(PromptError::Rate(12345))
        ));
    }

    #[test]
    fn names_stay_inside_the_sounds_folder() {
        let prompts = Prompts::new(PathBuf::from("/s"), "en".into(), PathBuf::from("/m"));
        assert_eq!(
            prompts.path_of("digits/5").unwrap(),
            PathBuf::from("/s/en/digits/5.wav")
        );
        assert_eq!(
            prompts.path_of("custom/hello.wav").unwrap(),
            PathBuf::from("/s/custom/hello.wav")
        );
        for bad in ["../etc/passwd", "/etc/passwd", "", "a/../../b", "./x"] {
            assert!(
                matches!(prompts.path_of(bad), Err(PromptError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_shipped_prompts_load_and_are_cached() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds");
        let prompts = Prompts::new(dir.clone(), "en".into(), dir.join("moh"));
        let beep = prompts.load("beep").unwrap();
        assert_eq!(beep.rate, 8000);
        assert!(beep.duration() > std::time::Duration::from_millis(100));
        assert!(Arc::ptr_eq(&beep, &prompts.load("beep").unwrap()));
        assert!(matches!(
            prompts.load("no-such-prompt"),
            Err(PromptError::NotFound(_))
        ));
        let music = prompts.music("default").unwrap();
        assert!(music.clip.duration() > std::time::Duration::from_secs(30));
        assert!(Arc::ptr_eq(&music, &prompts.music("default").unwrap()));
        assert!(matches!(
            prompts.music("../en"),
            Err(PromptError::BadName(_))
        ));
        assert!(prompts.music("jazz").is_err());
    }
}
