#!/usr/bin/env bash
# Regenerates switchboard's shipped sounds: the spoken prompts in sounds/en (listed in
# sounds/en/INDEX.tsv) and the music on hold in sounds/moh/default. A developer runs this
# after changing the list or the music; the WAV files are committed, so building or
# running switchboard needs neither espeak-ng nor sox.
#
# Every file is 8000 Hz, 16-bit signed, mono PCM WAV. The output is deterministic for
# the same espeak-ng and sox versions: sox runs with -R (fixed random seed, used by the
# plucked-string synth) and -D (no dither), and nothing depends on the clock.
#
# Usage: sounds/generate.sh            (from anywhere; it finds its own folder)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

need() {
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "generate.sh: '$1' not found; install it with: apt-get install $2" >&2
		exit 1
	fi
}
need espeak-ng espeak-ng
need sox sox

die() {
	echo "generate.sh: $*" >&2
	exit 1
}

# One English voice at a moderate speed for every prompt.
VOICE=en-us
SPEED=150
RATE=8000
SOX=(sox -R -D -V2)
OUT=(-r "$RATE" -b 16 -c 1 -e signed-integer -t wav)
# Synthesis input: the format options must come before -n, or sox synthesizes at 48 kHz
# (so lengths in samples are wrong) and resamples.
NULL=(-r "$RATE" -c 1 -n)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out/en" "$tmp/out/moh/default" "$here/en" "$here/moh/default"

# --- Prompts -----------------------------------------------------------------------

# Speech: trim the silence espeak-ng leaves around the words, resample to 8 kHz,
# peak-normalize to -3 dBFS, then pad 50 ms of silence at each end so prompts played
# back to back do not run into each other. The high-pass drops DC and rumble that a
# phone cannot reproduce anyway; the gain before it is headroom for its overshoot.
speak() {
	local name=$1 text=$2
	local out="$tmp/out/en/$name.wav"
	mkdir -p "$(dirname "$out")"
	printf '%s\n' "$text" | espeak-ng -v "$VOICE" -s "$SPEED" --stdin -w "$tmp/speech.wav"
	"${SOX[@]}" "$tmp/speech.wav" "${OUT[@]}" "$out" \
		gain -6 highpass 80 \
		silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse \
		rate -v "$RATE" norm -3 pad 0.05 0.05
}

# Non-speech entries (their INDEX text is in parentheses). Tones peak at -12 dBFS, not
# -3: a sine's loudness is close to its peak, so at -3 it would be far louder than speech.
tone() {
	local name=$1
	local out="$tmp/out/en/$name.wav"
	mkdir -p "$(dirname "$out")"
	case $name in
	beep)
		"${SOX[@]}" "${NULL[@]}" "${OUT[@]}" "$out" synth 0.3 sine 1000 fade h 0.01 0.3 0.01 norm -12
		;;
	beeperr)
		"${SOX[@]}" "${NULL[@]}" "${OUT[@]}" "$out" \
			synth 0.15 sine 400 fade h 0.01 0.15 0.01 pad 0 0.08 repeat 1 trim 0 0.38 norm -12
		;;
	silence/1)
		"${SOX[@]}" "${NULL[@]}" "${OUT[@]}" "$out" trim 0 1
		;;
	*)
		die "INDEX.tsv: no recipe for the non-speech entry '$name'"
		;;
	esac
}

declare -A seen=()
count=0
while IFS=$'\t' read -r name text || [[ -n $name ]]; do
	[[ -z $name || $name == '#'* ]] && continue
	[[ $name =~ ^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$ ]] || die "INDEX.tsv: bad name '$name'"
	[[ -n ${text:-} ]] || die "INDEX.tsv: '$name' has no text (name<TAB>text)"
	[[ -z ${seen[$name]:-} ]] || die "INDEX.tsv: '$name' is listed twice"
	seen[$name]=1
	if [[ $text == '('* ]]; then
		tone "$name"
	else
		speak "$name" "$text"
	fi
	count=$((count + 1))
done <"$here/en/INDEX.tsv"
echo "prompts: $count files"

# --- Music on hold ---------------------------------------------------------------------
#
# A tiny sequencer: each note is one sox synth process; notes are mixed a bar at a time
# (which bounds the number of processes sox -m runs at once) and the bars are then mixed
# at their offsets. All times are in samples at 8 kHz, so the arithmetic is exact.
#
# Seamless looping: a piece is rendered LEN samples long plus a tail in which the last
# notes and the reverb die away; the tail is then mixed back onto the start. Mixing and
# reverb are linear, so the result is exactly one period of the piece playing forever:
# the end of the file runs into its start with no click and no gap.

events=()

# note START LENGTH MIDI VOICE GAIN: queues one note (START and LENGTH in samples).
note() {
	events+=("$1 $2 $3 $4 $5")
}

# The sox effects that synthesize one note of a voice, LEN samples at 8 kHz long. Notes
# are made at 48 kHz (sox's plucked string needs it, and it keeps the triangle waves
# free of aliasing) and resampled to 8 kHz.
SYNTH_RATE=48000
voice_fx() {
	local up=$((SYNTH_RATE / RATE))
	local n=$(($1 * up)) midi=$2 voice=$3
	local pitch="%$((midi - 69))" # semitones from A4 = 440 Hz
	local fx
	case $voice in
	pluck) # a plucked string, softened: decays by itself, faded out so it never stops abruptly
		fx="synth ${n}s pluck $pitch highpass 80 lowpass 2000 fade q $((40 * up))s ${n}s $((n / 2))s"
		;;
	bell) # melody: sine plus its octave, quick attack, long logarithmic decay
		fx="synth ${n}s sine $pitch synth ${n}s sine mix %$((midi - 57))"
		fx+=" fade q $((80 * up))s fade l 0 ${n}s $((n - 80 * up))s"
		;;
	pad) # sustained chord tone: triangle and sine, slow swell in and out
		fx="synth ${n}s triangle $pitch synth ${n}s sine mix $pitch"
		fx+=" fade h $((6400 * up))s ${n}s $((12800 * up))s"
		;;
	bass) # triangle, so the harmonics carry the note on a phone that cannot play its root
		fx="synth ${n}s triangle $pitch fade h $((160 * up))s ${n}s $((n / 2))s"
		;;
	*)
		die "unknown voice '$voice'"
		;;
	esac
	echo "$fx rate $RATE"
}

# The effect that starts a sound N samples late (none for 0: sox warns on "pad 0s").
delay() {
	(($1 == 0)) || echo "pad ${1}s"
}

# render NAME BAR_SAMPLES BARS TAIL_SAMPLES: mixes the queued events into
# moh/default/NAME.wav, BARS bars long, then clears the queue.
render() {
	local name=$1 bar=$2 bars=$3 tail=$4
	local len=$((bar * bars))
	local b e start dur midi voice gain fx off
	local -a bar_inputs=()
	for ((b = 0; b < bars; b++)); do
		local -a inputs=()
		for e in "${events[@]}"; do
			read -r start dur midi voice gain <<<"$e"
			((start / bar == b)) || continue
			fx=$(voice_fx "$dur" "$midi" "$voice")
			# vol 0.3 leaves headroom for the sum; the finished piece is normalized.
			off=$((start - b * bar))
			inputs+=(-v 1 "|sox -R -D -r $SYNTH_RATE -c 1 -n -p $fx vol $gain vol 0.3 $(delay "$off")")
		done
		((${#inputs[@]} >= 6)) || die "$name: bar $b needs at least two notes"
		"${SOX[@]}" -m "${inputs[@]}" -t sox "$tmp/bar$b.sox"
		bar_inputs+=(-v 1 "|sox -R -D $tmp/bar$b.sox -p $(delay $((b * bar)))")
	done
	# Exactly LEN + TAIL samples whatever the last notes' lengths: sox -m pads the shorter
	# inputs with silence, and one input is silence of that length.
	bar_inputs+=(-v 1 "|sox ${NULL[*]} -p trim 0 $((len + tail))s")
	"${SOX[@]}" -m "${bar_inputs[@]}" -t sox "$tmp/dry.sox" trim 0 "$((len + tail))s"
	"${SOX[@]}" "$tmp/dry.sox" -t sox "$tmp/wet.sox" reverb 35 60 70
	"${SOX[@]}" "$tmp/wet.sox" -t sox "$tmp/body.sox" trim 0 "${len}s"
	"${SOX[@]}" "$tmp/wet.sox" -t sox "$tmp/tail.sox" trim "${len}s"
	"${SOX[@]}" -m -v 1 "$tmp/body.sox" -v 1 "$tmp/tail.sox" "${OUT[@]}" \
		"$tmp/out/moh/default/$name.wav" norm -9
	rm -f "$tmp"/bar*.sox "$tmp"/{dry,wet,body,tail}.sox
	events=()
}

# arpeggio START STEP PATTERN CHORD VOICE GAIN: one note per pattern index (into the
# chord's notes), STEP samples apart, each ringing on under the next two.
arpeggio() {
	local start=$1 step=$2 voice=$5 gain=$6
	local -a pattern chord
	read -r -a pattern <<<"$3"
	read -r -a chord <<<"$4"
	local i
	for i in "${!pattern[@]}"; do
		note $((start + i * step)) $((step * 3)) "${chord[${pattern[$i]}]}" "$voice" "$gain"
	done
}

# melody START STEP "MIDI:STEPS ...": notes in sequence, each STEPS steps long (and
# ringing on for two steps more).
melody() {
	local t=$1 step=$2 n midi steps
	for n in $3; do
		midi=${n%%:*}
		steps=${n##*:}
		note "$t" $((steps * step + step * 2)) "$midi" bell 0.22
		t=$((t + steps * step))
	done
}

# Piece 1, "morning": C major, 4/4 at 75 beats a minute (an eighth note is 0.4 s), eight
# chords of two bars each, a plucked arpeggio over a pad and a bass, with a bell melody.
# The closing G7 leads back into the opening Cmaj9.
eighth=3200
bar=$((8 * eighth))
chords=(
	"60 67 71 74 76" # Cmaj9
	"57 64 67 71 72" # Am9
	"53 60 64 69 72" # Fmaj7
	"55 62 67 69 71" # Gadd9
	"52 59 62 67 71" # Em7
	"57 64 67 72 76" # Am7
	"50 57 60 65 69" # Dm7
	"55 62 65 67 71" # G7
)
basses=(48 45 53 55 52 45 50 55)
for c in "${!chords[@]}"; do
	t=$((c * 2 * bar))
	arpeggio "$t" "$eighth" "0 1 2 3 4 3 2 1" "${chords[$c]}" pluck 0.5
	arpeggio $((t + bar)) "$eighth" "0 2 1 3 2 4 3 1" "${chords[$c]}" pluck 0.45
	read -r -a tones <<<"${chords[$c]}"
	for p in 1 2 3; do
		note "$t" $((2 * bar + 6400)) $((tones[p])) pad 0.09
	done
	note "$t" "$bar" "${basses[$c]}" bass 0.35
	note $((t + bar)) "$bar" "${basses[$c]}" bass 0.3
done
quarter=$((2 * eighth))
melody 0 "$quarter" "76:2 79:1 74:1 72:3 71:1 72:2 76:2 74:3 72:1
	69:2 72:1 76:1 74:2 72:2 71:3 74:1 79:4 79:2 76:2 74:3 71:1 72:2 76:2 79:2 76:2
	77:2 76:1 74:1 72:2 69:2 71:2 74:2 77:3 74:1"
render 01-morning "$bar" 16 $((4 * RATE))

# Piece 2, "waltz": F major, 3/4 with a beat of 0.75 s, eight chords of two bars each:
# a plucked arpeggio and a bell melody over a pad, the bass on each downbeat. The
# closing C7 leads back into the opening Fmaj7.
beat=6000
step=$((beat / 2))
bar=$((3 * beat))
chords=(
	"65 69 72 76 77 81" # Fmaj7
	"62 69 72 74 77 81" # Dm7
	"58 65 69 70 74 77" # Bbmaj7
	"60 67 70 72 74 76" # C9
	"57 64 67 69 72 76" # Am7
	"62 65 69 72 74 77" # Dm7
	"55 62 65 67 70 74" # Gm7
	"60 64 67 70 72 76" # C7
)
basses=(53 50 46 48 45 50 43 48)
for c in "${!chords[@]}"; do
	t=$((c * 2 * bar))
	arpeggio "$t" "$step" "0 2 3 4 3 2" "${chords[$c]}" pluck 0.45
	arpeggio $((t + bar)) "$step" "1 3 5 4 2 3" "${chords[$c]}" pluck 0.4
	read -r -a tones <<<"${chords[$c]}"
	for p in 1 2 3; do
		note "$t" $((2 * bar + 6400)) $((tones[p] - 12)) pad 0.08
	done
	note "$t" "$bar" "${basses[$c]}" bass 0.35
	note $((t + bar)) "$bar" "${basses[$c]}" bass 0.3
done
melody 0 "$beat" "81:3 79:2 77:1 77:2 74:1 72:3 70:2 74:1 77:3 76:3 74:3
	76:3 72:3 77:3 76:2 74:1 74:3 70:2 72:1 72:2 76:1 79:3"
render 02-waltz "$bar" 16 $((4 * RATE))
echo "music on hold: 2 files"

# --- Install ---------------------------------------------------------------------------
# Replace the old files only now that every new one was made, so a failed run leaves
# the committed set intact; a name dropped from INDEX.tsv loses its file.
find "$here/en" "$here/moh/default" -name '*.wav' -delete
(cd "$tmp/out" && find . -name '*.wav' -print0 | while IFS= read -r -d '' f; do
	mkdir -p "$here/$(dirname "$f")"
	mv "$f" "$here/$f"
done)
find "$here/en" -type d -empty -delete
echo "done: $(find "$here/en" "$here/moh" -name '*.wav' | wc -l) WAV files under $here"
