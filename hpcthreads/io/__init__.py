"""All HDF5 access: the layout (schema), writers and readers. Only this package imports h5py."""
