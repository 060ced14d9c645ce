"""Measures where a screenshot of `fedbatch report` has ink.

usage: report_screenshot.py PNG HEADER_HEIGHT SECTION_HEIGHT ID=COLOR...
The report's layout is fixed (fedbatch's HTMLReport): a header of
HEADER_HEIGHT pixels, then one SECTION_HEIGHT section per chart, in the
order given. For each chart this prints, as JSON, the share of the plot
region (below the section's title and note) that is not background, and how
many pixels are close to the chart's data colour.
"""
import json
import sys

from PIL import Image

png, header, section = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
charts = [a.split("=", 1) for a in sys.argv[4:]]
image = Image.open(png).convert("RGB")
width, height = image.size
pixels = image.load()
result = {"width": width, "height": height, "charts": {}}
for i, (name, colour) in enumerate(charts):
    target = tuple(int(colour.lstrip("#")[j:j + 2], 16) for j in (0, 2, 4))
    top = header + i * section + 60          # below the title and the note
    bottom = min(header + (i + 1) * section - 8, height)
    ink = near = total = 0
    for y in range(top, bottom):
        for x in range(24, min(24 + 760, width)):
            r, g, b = pixels[x, y]
            total += 1
            if r < 235 or g < 235 or b < 235:
                ink += 1
            if abs(r - target[0]) + abs(g - target[1]) + abs(b - target[2]) < 60:
                near += 1
    result["charts"][name] = {"ink": ink / max(total, 1), "colour_pixels": near, "top": top, "bottom": bottom}
print(json.dumps(result))
