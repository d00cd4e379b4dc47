// The scope picker's search: hides the choices whose value does not contain the typed text.
// Without JavaScript every choice stays listed, and the form works the same.
document.querySelectorAll('[data-picker]').forEach((picker) => {
  const search = picker.querySelector('[data-picker-search]');
  if (!search) return;
  search.addEventListener('input', () => {
    const typed = search.value.trim().toLowerCase();
    picker.querySelectorAll('[data-picker-value]').forEach((choice) => {
      choice.hidden = typed !== '' && !choice.dataset.pickerValue.includes(typed);
    });
  });
});
