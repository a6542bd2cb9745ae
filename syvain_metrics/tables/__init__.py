"""The columnar read path: rows held column by column, frames, plots and notebook displays."""
