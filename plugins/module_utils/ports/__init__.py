"""Published ports: parsing requests (``spec``) and choosing host ports (``allocator``)."""
