// Image to image and inpainting: the starting image, and a mask painted over it with the mouse.
// The mask is painted on a canvas laid over the (enlarged) image; it is sent at the image's own size,
// white where the picture is to be redrawn.
import {$, base64Of, dropZone, readFile} from "./api.js";

const DISPLAY = 256; // pixels a side the image is shown at
let image = null; // the starting image (an HTMLImageElement), or null
let painting = false;
let lastPoint = null; // where the current stroke is, in canvas pixels

export const hasImage = () => image !== null;

export function initImageInputs(onLoaded) {
  dropZone($("init-drop"), $("init-file"), async (file) => {
    const url = await readFile(file);
    const loaded = new Image();
    loaded.onload = () => { show(loaded); onLoaded(loaded.naturalWidth, loaded.naturalHeight); };
    loaded.src = url;
  });
  const mask = $("mask-canvas");
  mask.addEventListener("pointerdown", (event) => { painting = true; lastPoint = null; paint(event); });
  mask.addEventListener("pointermove", (event) => { if (painting) paint(event); });
  window.addEventListener("pointerup", () => { painting = false; });
  $("mask-clear").addEventListener("click", clearMask);
  $("mask-invert").addEventListener("click", invertMask);
  $("strength").addEventListener("input", () => { $("strength-value").value = $("strength").value; });
}

function show(loaded) {
  image = loaded;
  const scale = DISPLAY / Math.max(loaded.naturalWidth, loaded.naturalHeight);
  const [w, h] = [Math.round(loaded.naturalWidth * scale), Math.round(loaded.naturalHeight * scale)];
  for (const canvas of [$("init-canvas"), $("mask-canvas")]) { canvas.width = w; canvas.height = h; }
  const context = $("init-canvas").getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(loaded, 0, 0, w, h);
  clearMask();
  $("paint").hidden = false;
}

// A stroke from the last point to this one (the mouse skips pixels when it moves fast), with round ends.
function paint(event) {
  const canvas = $("mask-canvas");
  const box = canvas.getBoundingClientRect();
  const point = [(event.clientX - box.left) * canvas.width / box.width,
                 (event.clientY - box.top) * canvas.height / box.height];
  const context = canvas.getContext("2d");
  context.strokeStyle = "rgb(255, 0, 0)";
  context.lineWidth = Number($("brush-size").value);
  context.lineCap = context.lineJoin = "round";
  context.beginPath();
  context.moveTo(...(lastPoint ?? point));
  context.lineTo(...point);
  context.stroke();
  lastPoint = point;
}

function clearMask() {
  const canvas = $("mask-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

function invertMask() {
  const canvas = $("mask-canvas");
  const context = canvas.getContext("2d");
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const painted = pixels.data[i + 3] >= 128;
    pixels.data.set(painted ? [0, 0, 0, 0] : [255, 0, 0, 255], i);
  }
  context.putImageData(pixels, 0, 0);
}

function painted() {
  const canvas = $("mask-canvas");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) return true;
  return false;
}

// The starting image and the mask (or null when nothing is painted) as base64 PNGs at the image's own size.
export function imagePayload() {
  const [w, h] = [image.naturalWidth, image.naturalHeight];
  const source = document.createElement("canvas");
  source.width = w; source.height = h;
  source.getContext("2d").drawImage(image, 0, 0);
  if (!painted()) return {init: base64Of(source.toDataURL("image/png")), mask: null};
  const mask = document.createElement("canvas");
  mask.width = w; mask.height = h;
  const context = mask.getContext("2d");
  context.fillStyle = "black";
  context.fillRect(0, 0, w, h);
  const white = document.createElement("canvas"); // the painted pixels, white, at the display size
  white.width = $("mask-canvas").width; white.height = $("mask-canvas").height;
  const whiteContext = white.getContext("2d");
  whiteContext.drawImage($("mask-canvas"), 0, 0);
  whiteContext.globalCompositeOperation = "source-in";
  whiteContext.fillStyle = "white";
  whiteContext.fillRect(0, 0, white.width, white.height);
  context.imageSmoothingEnabled = false;
  context.drawImage(white, 0, 0, w, h);
  return {init: base64Of(source.toDataURL("image/png")), mask: base64Of(mask.toDataURL("image/png"))};
}
