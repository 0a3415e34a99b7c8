// Generate and Interrupt, the progress bar with its live preview, and the gallery of results.
import {$, api, pngUrl} from "./api.js";
import {hasImage, imagePayload} from "./mask.js";
import {readSettings} from "./settings.js";

const POLL_MS = 400;
let lastSeed = null;

export function initGenerate(getMode, onSeeInside) {
  $("generate").addEventListener("click", () => generate(getMode(), onSeeInside));
  $("interrupt").addEventListener("click", () => api("/sdapi/v1/interrupt", {}));
  $("seed-random").addEventListener("click", () => { $("seed").value = -1; });
  $("seed-reuse").addEventListener("click", () => { if (lastSeed !== null) $("seed").value = lastSeed; });
}

// Run `work` (a promise-returning function) with the progress bar and preview following the server.
export async function withProgress(work) {
  $("error").textContent = "";
  $("generate").disabled = true;
  $("interrupt").disabled = false;
  $("progress").value = 0;
  $("progress-text").textContent = "starting…";
  let done = false;
  const poll = async () => {
    while (!done) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (done) break;
      try {
        const state = await api("/sdapi/v1/progress");
        if (done) break;
        $("progress").value = state.progress;
        const step = state.state || {};
        $("progress-text").textContent = step.sampling_steps ? `step ${step.sampling_step} of ${step.sampling_steps}` : "waiting…";
        if (state.current_image) {
          $("preview").src = pngUrl(state.current_image);
          $("preview-box").hidden = false;
        }
      } catch { /* the next poll tries again */ }
    }
  };
  poll();
  try {
    return await work();
  } catch (error) {
    $("error").textContent = error.message;
    return null;
  } finally {
    done = true;
    $("generate").disabled = false;
    $("interrupt").disabled = true;
    $("progress").value = 1;
    $("progress-text").textContent = "done";
    $("preview-box").hidden = true;
  }
}

async function generate(mode, onSeeInside) {
  const request = readSettings();
  let route = "/sdapi/v1/txt2img";
  if (mode === "img2img") {
    if (!hasImage()) { $("error").textContent = "Drop or choose a starting image first."; return; }
    const {init, mask} = imagePayload();
    Object.assign(request, {init_images: [init], denoising_strength: Number($("strength").value)});
    if (mask) Object.assign(request, {mask, mask_blur: 0, inpainting_fill: 1});
    route = "/sdapi/v1/img2img";
  }
  const result = await withProgress(() => api(route, request));
  if (!result) return;
  const info = JSON.parse(result.info);
  lastSeed = info.seed;
  $("seed-reuse").disabled = false;
  showResults(result.images, info, mode === "txt2img" ? onSeeInside : null);  // img2img: not a txt2img run
}

function showResults(images, info, onSeeInside) {
  const gallery = $("gallery");
  gallery.querySelector(".hint")?.remove();
  images.forEach((base64, i) => {
    const seed = info.all_seeds[i];
    const card = document.createElement("div");
    card.className = "card";
    const img = document.createElement("img");
    img.src = pngUrl(base64);
    img.alt = `picture, seed ${seed}`;
    const text = document.createElement("div");
    const infotext = document.createElement("pre");
    infotext.className = "infotext";
    infotext.textContent = info.infotexts[i];
    const links = document.createElement("div");
    links.className = "links";
    const download = document.createElement("a");
    download.href = img.src;
    download.download = `nanoldm-${seed}.png`;
    download.textContent = "Download PNG";
    links.append(download);
    if (onSeeInside) {
      const inside = document.createElement("button");
      inside.type = "button";
      inside.textContent = "See inside";
      inside.title = "how this picture formed, and where each word was looked at";
      inside.addEventListener("click", () => onSeeInside(base64));
      links.append(inside);
    }
    text.append(infotext, links);
    card.append(img, text);
    gallery.prepend(card);
  });
}
