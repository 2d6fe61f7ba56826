"""``python -m pyro_vae._semi_cell``: one cell of ``pyro-vae semi``'s table, in a process of its
own (:func:`pyro_vae.semi.cell_main`)."""

from .semi import cell_main

if __name__ == "__main__":
    cell_main()
