"""Azure Database flexible servers (kinds ``azure-postgres`` and ``azure-mysql``, one
package: the two services differ only in names, see ``arm.Flavor``): ``target``
(settings, preflight, capture, record checks), ``arm`` (the management REST calls),
``restore`` (the restore to a new server on the shared point-in-time job). The kind
modules ``postgres`` and ``mysql`` are what the registry names."""
