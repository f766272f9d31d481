"""Detection utilities around MONAI's: anchor shapes, the paper's anchor matching, negative sampling."""
