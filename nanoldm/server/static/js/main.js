// The page: tabs, the fields' defaults from the server, and each part wired up.
import {$, api} from "./api.js";
import {initGenerate} from "./generate.js";
import {initInside} from "./inside.js";
import {initImageInputs} from "./mask.js";
import {loadNetworks} from "./networks.js";
import {initPngInfo} from "./pnginfo.js";
import {applyDefaults, fillSamplers} from "./settings.js";

let mode = "txt2img";

function showTab(name) {
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  const generating = name === "txt2img" || name === "img2img";
  $("generate-panel").hidden = !generating;
  $("pnginfo-panel").hidden = name !== "pnginfo";
  $("inside-panel").hidden = name !== "inside";
  if (generating) {
    mode = name;
    $("img2img-inputs").hidden = name !== "img2img";
  }
  document.body.dataset.tab = name;
}

async function start() {
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
  }
  const seeInside = initInside(showTab);
  initGenerate(() => mode, seeInside);
  initImageInputs((width, height) => { $("width").value = width; $("height").value = height; });
  initPngInfo(showTab);
  try {
    const [samplers, defaults] = await Promise.all([api("/sdapi/v1/samplers"), api("/nanoldm/v1/defaults")]);
    fillSamplers(samplers);
    applyDefaults(defaults);
    $("strength").value = defaults.denoising_strength;
    $("strength-value").value = defaults.denoising_strength;
    await loadNetworks();
  } catch (error) {
    $("error").textContent = `Could not reach the server: ${error.message}`;
  }
  document.body.dataset.ready = "true";
}

start();
