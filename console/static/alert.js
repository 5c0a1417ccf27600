// The pages' alert region (role=alert): its text, and its data-code for scripts and tests.

/** Shows a failure: ``code`` in data-code (docs in console/README.md), ``text`` for people. */
export function showMessage(element, code, text) {
  element.dataset.code = code;
  element.textContent = text;
}

/** Empties the region and drops its code: nothing is wrong. */
export function clearMessage(element) {
  delete element.dataset.code;
  element.textContent = '';
}
