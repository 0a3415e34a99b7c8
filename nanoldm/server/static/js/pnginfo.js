// PNG info: drop a PNG, read its generation parameters, send them to text to image.
import {$, api, base64Of, dropZone, readFile} from "./api.js";
import {applyParameters} from "./settings.js";

let parameters = null;

export function initPngInfo(showTab) {
  dropZone($("png-drop"), $("png-file"), async (file) => {
    const url = await readFile(file);
    $("png-image").src = url;
    $("png-image").hidden = false;
    try {
      const result = await api("/sdapi/v1/png-info", {image: base64Of(url)});
      parameters = result.info ? result.parameters : null;
      $("png-parameters").textContent = result.info || "This PNG carries no generation parameters.";
    } catch (error) {
      parameters = null;
      $("png-parameters").textContent = error.message;
    }
    $("png-send").disabled = parameters === null;
  });
  $("png-send").addEventListener("click", () => {
    applyParameters(parameters);
    showTab("txt2img");
  });
}
