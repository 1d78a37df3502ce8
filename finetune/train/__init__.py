"""Training: the background job (`job`: setup -> train -> save -> cleanup) and what it is made of:
`sft` and `preference` (a config and its plan -> TRL trainer objects), `callbacks` (the trainer
<-> run folder), `failures` (one-paragraph messages), `distributed` (accelerate ranks),
`datacache` (tokenized datasets cached by data + tokenizer). The modules here may import torch and
transformers at their top; nothing light imports them at its own."""
