// Sends a model package as the raw request body (streamed by the browser), with the
// session's CSRF token in a header, and shows the verification result.
(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (!form) { return; }
  var result = document.getElementById("upload-result");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var file = document.getElementById("package").files[0];
    if (!file) { return; }
    result.className = "message notice";
    result.textContent = "Uploading and verifying " + file.name + "…";
    fetch("/api/models", {
      method: "POST", credentials: "same-origin", body: file,
      headers: {"Content-Type": "application/octet-stream", "X-CSRF-Token": form.getAttribute("data-csrf")}
    }).then(function (response) {
      return response.json().then(function (body) { return {ok: response.ok, body: body}; });
    }).then(function (answer) {
      if (answer.ok) {
        result.className = "message ok";
        result.textContent = "Verified and installed " + answer.body.id + " " + answer.body.version +
          " (signed by key " + answer.body.signing_key + "). Reloading…";
        window.setTimeout(function () { window.location.reload(); }, 1500);
      } else {
        result.className = "message error";
        result.textContent = "Refused: " + (answer.body.error || "unknown error");
      }
    }).catch(function (error) {
      result.className = "message error";
      result.textContent = "Upload failed: " + error;
    });
  });
}());
