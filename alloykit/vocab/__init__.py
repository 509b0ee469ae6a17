"""Tokenizers: the output tokenizer (``tokenizer_source``, ``tokenizer:``) and the models'
vocabulary tensors laid out in its vocabulary before they are merged, as mergekit does."""
