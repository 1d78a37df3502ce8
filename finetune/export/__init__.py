"""Getting the fine-tune out of the studio: the adapter as a zip, a merged model with its model card,
an Ollama Modelfile, a Hub upload. Submodules: `merge` (zip, merge, push), `model_card`, `serving`."""
