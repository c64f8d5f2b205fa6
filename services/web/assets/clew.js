// Clew's pages work without script; this adds conveniences only.
// Loaded as a module from this origin (the Content-Security-Policy allows
// nothing else): no inline handlers, no eval, no other origin.

// Sign-in: read a token file into the token field. The file never leaves
// the browser except as that field, in the sign-in form's body.
for (const input of document.querySelectorAll("input[type=file][data-token-into]")) {
  input.addEventListener("change", async () => {
    const target = document.getElementById(input.dataset.tokenInto);
    const file = input.files && input.files[0];
    if (!target || !file) return;
    target.value = (await file.text()).trim();
  });
}
