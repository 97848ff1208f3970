#!/bin/sh
# Writes tests/data/x264_bframes.mp4 (libx264 High profile with B-frames, made by ffmpeg
# from a synthetic pattern) and x264_bframes_ffmpeg.npy, ffmpeg's own rgb24 decode of it
# (u8, (F, H, W, 3)). Run by hand (needs ffmpeg and the repo's .venv with numpy):
#     sh crates/wanrt-media/tests/make_media_fixtures.sh
set -e
D="$(dirname "$0")/data"
PY="$(dirname "$0")/../../../.venv/bin/python"
mkdir -p "$D"
ffmpeg -v error -y -f lavfi -i "testsrc2=size=48x32:rate=16:duration=0.75" \
  -c:v libx264 -profile:v high -bf 3 -pix_fmt yuv420p -movflags +faststart "$D/x264_bframes.mp4"
ffmpeg -v error -y -i "$D/x264_bframes.mp4" -f rawvideo -pix_fmt rgb24 "$D/x264_bframes.rgb"
"$PY" - "$D" <<'PYEOF'
import sys, numpy as np
d = sys.argv[1]
a = np.fromfile(f"{d}/x264_bframes.rgb", dtype=np.uint8).reshape(-1, 32, 48, 3)
np.save(f"{d}/x264_bframes_ffmpeg.npy", a)
print(a.shape)
PYEOF
rm "$D/x264_bframes.rgb"
ffprobe -v error -show_entries stream=profile,has_b_frames,nb_frames "$D/x264_bframes.mp4"
