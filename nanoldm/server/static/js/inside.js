// See inside: a picture's trajectory (the model's guess of the final picture after each step) and, per prompt
// word, the cross-attention map, from POST /nanoldm/v1/explain.
import {$, api, pngUrl} from "./api.js";
import {withProgress} from "./generate.js";
import {readSettings} from "./settings.js";

export function initInside(showTab) {
  $("inside-current").addEventListener("click", () => explain(readSettings()));
  // a finished picture: its own parameters, read back from the PNG, make the same picture again
  return async (base64) => {
    showTab("inside");
    const info = await api("/sdapi/v1/png-info", {image: base64});
    const p = info.parameters;
    explain({
      prompt: p["Prompt"] ?? "", negative_prompt: p["Negative prompt"] ?? "", sampler_name: p["Sampler"],
      steps: Number(p["Steps"]), cfg_scale: Number(p["CFG scale"]), seed: Number(p["Seed"]),
      width: Number(p["Size-1"]), height: Number(p["Size-2"]),
    });
  };
}

async function explain(request) {
  $("inside-status").textContent = "Making the picture and watching inside…";
  $("inside-current").disabled = true;
  const result = await withProgress(() => api("/nanoldm/v1/explain", {...request, batch_size: 1}));
  $("inside-current").disabled = false;
  $("inside-status").textContent = result ? "" : $("error").textContent;
  if (result) show(result);
}

function show(result) {
  $("inside-image").src = pngUrl(result.image);
  $("inside-info").textContent = result.info;
  $("inside-steps").replaceChildren(...result.steps.map((base64, i) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = pngUrl(base64);
    img.alt = `step ${i + 1}`;
    const caption = document.createElement("figcaption");
    caption.textContent = `step ${i + 1}`;
    figure.append(img, caption);
    return figure;
  }));
  const chips = result.words.map((word) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.setAttribute("aria-pressed", "false");
    chip.dataset.word = word.word;
    chip.append(word.word);
    const share = document.createElement("small");
    share.textContent = `${(100 * word.share).toFixed(1)}%`;
    chip.append(share);
    chip.addEventListener("click", () => pick(chip, word));
    return chip;
  });
  $("inside-words").replaceChildren(...chips);
  $("inside-result").hidden = false;
  if (chips.length) pick(chips[0], result.words[0]);
}

function pick(chip, word) {
  for (const other of $("inside-words").children) other.setAttribute("aria-pressed", "false");
  chip.setAttribute("aria-pressed", "true");
  $("inside-map").src = pngUrl(word.image);
  $("inside-map-caption").textContent = `Where the picture looked at "${word.word}"`;
}
